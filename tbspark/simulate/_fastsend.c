/* The asyncio engine's hot path in C (QoS 0): per wake-up, one call takes every due message off
 * the schedule, draws its value, formats the payload exactly as the Python engine does, builds the
 * MQTT PUBLISH, send()s it and counts the ground truth. No Python object is touched per message
 * unless a socket cannot take a whole packet (the rest is handed back to Python, which keeps the
 * per-connection buffer and the reconnect logic).
 *
 * Python side: tbspark/simulate/native.py (setup, ground-truth folding) and aio_engine.py.
 *
 * Hot(n_devices, zone_of_device: list[int], topic: bytes, device_ts: bool, window_ms, near_ms,
 *     scale_exp=0)
 *   .add_feed(dev, period_s, quota, pre, post, kind, lo, hi, quote, num_mode, const_num, seed,
 *             fa=0.0, fb=0.0, decimals=0, clip_lo=-inf, clip_hi=inf)
 *        -> feed index. kind 0: the body is pre only; kind 1: pre + a uniform integer in [lo, hi]
 *        (quoted when quote) + post; kind 2: pre + a normal number (mean fa, stddev fb) rounded to
 *        `decimals` (clipped to [clip_lo, clip_hi] first) + post; kind 3: the same with a uniform
 *        number in [fa, fb). num_mode 0: no
 *        value_key number; 1: the drawn number; 2: const_num (an integer).
 *        Numbers of kinds 2 and 3 are drawn as integers n = round(x * 10^decimals) and written as the
 *        decimal n / 10^decimals with at least one fractional digit ("42.3", "42.0"), so the text
 *        and the ground truth agree exactly. The ground truth counts every value key in units of
 *        10^-scale_exp (scale_exp >= the decimals of every float value key), in 128-bit sums.
 *   .start_feed(feed, due)          schedule the feed's first message (absolute monotonic time)
 *   .set_state(dev, fd, state)      0: messages are skipped (down, or too much pending);
 *                                   1: send() on fd; 2: packets handed back to Python (pending)
 *   .drop(dev)                      never schedule the device's feeds again
 *   .send_due(now, ts_ms, limit)    -> (sent, skipped, handback list or None); handback items
 *        (dev, 0, bytes): the part of a packet the socket did not take (counted as sent);
 *        (dev, 1, bytes): a whole packet for the device's pending buffer (counted as sent);
 *        (dev, 2, errno): send() failed (not counted; the device is skipped from now on)
 *   .next_due() -> float | None;  .done() -> bool
 *   .take() -> ([(dev, sent, sum)], [(zone, start, count, sum, min, max, near_edge)]): the ground
 *        truth counted since the last take (then reset).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

typedef struct {
    double due, period;
    int64_t left;
    int32_t dev;
    int kind, quote, num_mode, decimals;
    int64_t lo, const_num;
    double fa, fb, pow10;  /* kinds 2 and 3: mean and stddev, or low and high; 10^decimals */
    double limit;          /* |n| must stay below: exact in a double, and in int64 once scaled */
    double clip_lo, clip_hi; /* kind 2: the draw is clipped to these (min and max) */
    int64_t gt_mul;        /* drawn number -> ground-truth units: 10^(scale_exp - decimals) */
    uint64_t span, threshold; /* span 0: the whole 64-bit range */
    char *pre, *post;
    Py_ssize_t pre_len, post_len;
    uint64_t s[4]; /* xoshiro256** state */
} Feed;

typedef __int128 i128;

typedef struct {
    int fd, state, dropped;
    int32_t zone;
    int64_t last_ts, sent;
    i128 sum;
} Dev;

typedef struct {
    int32_t zone;
    int64_t start, count, min, max, near;
    i128 sum;
} Win;

typedef struct {
    PyObject_HEAD
    Dev *devs;
    Py_ssize_t ndev;
    Feed *feeds;
    Py_ssize_t nfeed, capfeed;
    int32_t *heap; /* feed indices, a binary min-heap on due */
    Py_ssize_t nheap;
    int32_t *later; /* feeds taken in this call, rescheduled after it */
    Win *wins;
    Py_ssize_t nwin, capwin;
    Py_ssize_t *zone_last; /* per zone: its last used window entry, or -1 */
    int32_t nzone;
    char *topic;
    Py_ssize_t topic_len;
    int device_ts;
    int64_t window_ms, near_ms;
    int scale_exp;
    char *buf;
    Py_ssize_t cap;
} Hot;

/* ---- PRNG: xoshiro256**, seeded through splitmix64 ----------------------------------------- */

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t next_u64(uint64_t *s) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline int64_t draw(Feed *f) {
    uint64_t x = next_u64(f->s);
    if (f->span == 0)
        return (int64_t)x;
    while (x < f->threshold) /* rejection: every value of the range equally likely */
        x = next_u64(f->s);
    return (int64_t)((uint64_t)f->lo + x % f->span);
}

/* A float in [0, 1) with 53 random bits. */
static inline double unit(uint64_t *s) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }

#define FLOAT_LIMIT 1e15 /* |n| below this: exact in a double, 15 digits at most */

/* Kinds 2 and 3: the next number as n = round(x * 10^decimals) (half to even), and whether x was
 * negative (so that -0.04 at one decimal is written "-0.0", as Python writes round(-0.04, 1)). */
static inline int64_t draw_scaled(Feed *f, int *neg) {
    for (;;) {
        double x;
        if (f->kind == 2) { /* Box-Muller: u1 in (0, 1] */
            double u1 = 1.0 - unit(f->s), u2 = unit(f->s);
            x = f->fa + f->fb * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
            x = x < f->clip_lo ? f->clip_lo : x > f->clip_hi ? f->clip_hi : x;
        } else {
            x = f->fa + (f->fb - f->fa) * unit(f->s);
        }
        double y = nearbyint(x * f->pow10);
        if (fabs(y) < f->limit) { /* else (a draw dozens of deviations out): draw again */
            *neg = signbit(y) != 0;
            return (int64_t)y;
        }
    }
}

/* ---- the schedule ------------------------------------------------------------------------- */

static void sift_up(Hot *h, Py_ssize_t i) {
    int32_t *hp = h->heap;
    int32_t x = hp[i];
    double d = h->feeds[x].due;
    while (i > 0) {
        Py_ssize_t p = (i - 1) >> 1;
        if (h->feeds[hp[p]].due <= d)
            break;
        hp[i] = hp[p];
        i = p;
    }
    hp[i] = x;
}

static void sift_down(Hot *h, Py_ssize_t i) {
    int32_t *hp = h->heap;
    Py_ssize_t n = h->nheap;
    int32_t x = hp[i];
    double d = h->feeds[x].due;
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && h->feeds[hp[c + 1]].due < h->feeds[hp[c]].due)
            c++;
        if (h->feeds[hp[c]].due >= d)
            break;
        hp[i] = hp[c];
        i = c;
    }
    hp[i] = x;
}

static void heap_push(Hot *h, int32_t feed) {
    h->heap[h->nheap++] = feed;
    sift_up(h, h->nheap - 1);
}

static int32_t heap_pop(Hot *h) {
    int32_t top = h->heap[0];
    h->nheap--;
    if (h->nheap > 0) {
        h->heap[0] = h->heap[h->nheap];
        sift_down(h, 0);
    }
    return top;
}

/* ---- ground truth --------------------------------------------------------------------------- */

static int add_window(Hot *h, int32_t zone, int64_t t, int64_t v) { /* v: ground-truth units */
    int64_t start = t - (((t % h->window_ms) + h->window_ms) % h->window_ms);
    int64_t off = t - start;
    int near = off < h->near_ms || h->window_ms - off <= h->near_ms;
    Py_ssize_t i = h->zone_last[zone];
    Win *w = NULL;
    if (i >= 0 && h->wins[i].start == start) {
        w = &h->wins[i];
    } else {
        for (i = h->nwin - 1; i >= 0; i--)
            if (h->wins[i].zone == zone && h->wins[i].start == start) {
                w = &h->wins[i];
                break;
            }
        if (w == NULL) {
            if (h->nwin == h->capwin) {
                Py_ssize_t cap = h->capwin ? 2 * h->capwin : 64;
                Win *nw = PyMem_Realloc(h->wins, cap * sizeof(Win));
                if (nw == NULL)
                    return -1;
                h->wins = nw;
                h->capwin = cap;
            }
            i = h->nwin++;
            w = &h->wins[i];
            w->zone = zone;
            w->start = start;
            w->count = w->sum = w->near = 0;
            w->min = w->max = v;
        }
        h->zone_last[zone] = i;
    }
    w->count++;
    w->sum += v;
    if (v < w->min)
        w->min = v;
    if (v > w->max)
        w->max = v;
    w->near += near;
    return 0;
}

/* ---- formatting ------------------------------------------------------------------------------ */

static inline char *put_int(char *p, int64_t v) {
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *p++ = '-';
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* n / 10^decimals with `decimals` fractional digits, trailing zeros dropped down to one. */
static inline char *put_scaled(char *p, int64_t n, int neg, int decimals, double pow10) {
    uint64_t u = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
    uint64_t div = (uint64_t)pow10;
    if (neg)
        *p++ = '-';
    p = put_int(p, (int64_t)(u / div));
    *p++ = '.';
    if (decimals == 0) {
        *p++ = '0';
        return p;
    }
    uint64_t frac = u % div;
    char digits[20];
    for (int i = decimals - 1; i >= 0; i--) {
        digits[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    int keep = decimals;
    while (keep > 1 && digits[keep - 1] == '0')
        keep--;
    memcpy(p, digits, keep);
    return p + keep;
}

static const char TS_HEAD[] = "{\"ts\":";
static const char TS_MID[] = ",\"values\":{";
#define HDR 5 /* room for the fixed header and up to 4 bytes of remaining length */

/* ---- the type --------------------------------------------------------------------------------- */

static void Hot_dealloc(Hot *h) {
    for (Py_ssize_t i = 0; i < h->nfeed; i++) {
        PyMem_Free(h->feeds[i].pre);
        PyMem_Free(h->feeds[i].post);
    }
    PyMem_Free(h->devs);
    PyMem_Free(h->feeds);
    PyMem_Free(h->heap);
    PyMem_Free(h->later);
    PyMem_Free(h->wins);
    PyMem_Free(h->zone_last);
    PyMem_Free(h->topic);
    PyMem_Free(h->buf);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static int Hot_init(Hot *h, PyObject *args, PyObject *kw) {
    Py_ssize_t ndev;
    PyObject *zones;
    const char *topic;
    Py_ssize_t tlen;
    int device_ts;
    long long window_ms, near_ms;
    int scale_exp = 0;
    if (!PyArg_ParseTuple(args, "nOy#pLL|i", &ndev, &zones, &topic, &tlen, &device_ts, &window_ms,
                          &near_ms, &scale_exp))
        return -1;
    if (h->devs != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Hot is initialised once");
        return -1;
    }
    if (ndev < 0 || window_ms <= 0 || tlen > 65535 || scale_exp < 0 || scale_exp > 15 ||
        !PyList_Check(zones) ||
        PyList_GET_SIZE(zones) != ndev) {
        PyErr_SetString(PyExc_ValueError, "bad arguments to Hot()");
        return -1;
    }
    h->devs = PyMem_Calloc(ndev ? ndev : 1, sizeof(Dev));
    if (h->devs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    h->ndev = ndev;
    int32_t nzone = 0;
    for (Py_ssize_t i = 0; i < ndev; i++) {
        long z = PyLong_AsLong(PyList_GET_ITEM(zones, i));
        if (z < 0 || z > INT32_MAX) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "zone indices must be >= 0");
            return -1;
        }
        h->devs[i].zone = (int32_t)z;
        h->devs[i].fd = -1;
        if (z + 1 > nzone)
            nzone = (int32_t)(z + 1);
    }
    h->nzone = nzone;
    h->zone_last = PyMem_Malloc((nzone ? nzone : 1) * sizeof(Py_ssize_t));
    h->topic = PyMem_Malloc(tlen ? tlen : 1);
    if (h->zone_last == NULL || h->topic == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (int32_t z = 0; z < nzone; z++)
        h->zone_last[z] = -1;
    memcpy(h->topic, topic, tlen);
    h->topic_len = tlen;
    h->device_ts = device_ts;
    h->window_ms = window_ms;
    h->near_ms = near_ms;
    h->scale_exp = scale_exp;
    return 0;
}

static char *dup_bytes(const char *s, Py_ssize_t n) {
    char *p = PyMem_Malloc(n ? n : 1);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

static PyObject *Hot_add_feed(Hot *h, PyObject *args) {
    Py_ssize_t dev;
    double period;
    long long quota, lo, hi, const_num;
    unsigned long long seed;
    const char *pre, *post;
    Py_ssize_t pre_len, post_len;
    int kind, quote, num_mode, decimals = 0;
    double fa = 0.0, fb = 0.0, clip_lo = -INFINITY, clip_hi = INFINITY;
    if (!PyArg_ParseTuple(args, "ndLy#y#iLLpiLK|ddidd", &dev, &period, &quota, &pre, &pre_len,
                          &post, &post_len, &kind, &lo, &hi, &quote, &num_mode, &const_num, &seed,
                          &fa, &fb, &decimals, &clip_lo, &clip_hi))
        return NULL;
    int floaty = kind == 2 || kind == 3;
    if (dev < 0 || dev >= h->ndev || !(period > 0) || quota < 0 || kind < 0 || kind > 3 ||
        num_mode < 0 || num_mode > 2 || (kind == 1 && hi < lo) || (kind == 0 && num_mode == 1) ||
        (floaty && (decimals < 0 || decimals > h->scale_exp || !isfinite(fa) || !isfinite(fb) ||
                    (kind == 2 && (fb < 0 || clip_hi < clip_lo)) || (kind == 3 && fb < fa)))) {
        PyErr_SetString(PyExc_ValueError, "bad feed");
        return NULL;
    }
    /* Ground-truth units: 10^-scale_exp. Integers (drawn or constant) must fit once scaled. */
    int64_t mul = 1;
    for (int i = floaty ? decimals : 0; i < h->scale_exp; i++)
        mul *= 10;
    double limit = FLOAT_LIMIT, p10 = 1.0;
    for (int i = 0; i < decimals; i++)
        p10 *= 10.0;
    if (floaty) {
        if ((double)INT64_MAX / (double)mul / 2 < limit)
            limit = (double)INT64_MAX / (double)mul / 2;
        /* The redraw loop must end: the whole range (uniform) or mean + 10 deviations (normal). */
        double reach = kind == 3 ? fmax(fabs(fa), fabs(fb))
                                 : fmin(fabs(fa) + 10.0 * fb, fmax(fabs(clip_lo), fabs(clip_hi)));
        if (!(reach * p10 < limit)) {
            PyErr_SetString(PyExc_ValueError, "a float generator's range too large for the C path");
            return NULL;
        }
    }
    if (!floaty && mul > 1) {
        int64_t lim = INT64_MAX / mul;
        if ((kind == 1 && num_mode == 1 && (lo < -lim || hi > lim)) ||
            (num_mode == 2 && (const_num < -lim || const_num > lim))) {
            PyErr_SetString(PyExc_ValueError, "an integer value key too large for the scale");
            return NULL;
        }
    }
    if (h->nfeed == h->capfeed) {
        Py_ssize_t cap = h->capfeed ? 2 * h->capfeed : 64;
        Feed *nf = PyMem_Realloc(h->feeds, cap * sizeof(Feed));
        int32_t *nh = PyMem_Realloc(h->heap, cap * sizeof(int32_t));
        if (nf != NULL)
            h->feeds = nf;
        if (nh != NULL)
            h->heap = nh;
        int32_t *nl = PyMem_Realloc(h->later, cap * sizeof(int32_t));
        if (nl != NULL)
            h->later = nl;
        if (nf == NULL || nh == NULL || nl == NULL)
            return PyErr_NoMemory();
        h->capfeed = cap;
    }
    /* The longest packet of this feed: header, topic, head with the longest ts, body, end. */
    Py_ssize_t need = HDR + 2 + h->topic_len + 64 + pre_len + 48 + post_len + 4;
    if (need > h->cap) {
        char *nb = PyMem_Realloc(h->buf, need);
        if (nb == NULL)
            return PyErr_NoMemory();
        h->buf = nb;
        h->cap = need;
    }
    Feed *f = &h->feeds[h->nfeed];
    memset(f, 0, sizeof *f);
    f->pre = dup_bytes(pre, pre_len);
    f->post = dup_bytes(post, post_len);
    if (f->pre == NULL || f->post == NULL) {
        PyMem_Free(f->pre);
        PyMem_Free(f->post);
        return PyErr_NoMemory();
    }
    f->pre_len = pre_len;
    f->post_len = post_len;
    f->dev = (int32_t)dev;
    f->period = period;
    f->left = quota;
    f->kind = kind;
    f->quote = quote;
    f->num_mode = num_mode;
    f->lo = lo;
    f->const_num = const_num;
    f->decimals = decimals;
    f->fa = fa;
    f->fb = fb;
    f->pow10 = p10;
    f->clip_lo = clip_lo;
    f->clip_hi = clip_hi;
    f->limit = limit;
    f->gt_mul = mul;
    if (kind == 1) {
        f->span = (uint64_t)hi - (uint64_t)lo + 1; /* wraps to 0 for the whole 64-bit range */
        f->threshold = f->span ? ((uint64_t)0 - f->span) % f->span : 0;
    }
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        f->s[i] = splitmix(&x);
    return PyLong_FromSsize_t(h->nfeed++);
}

static PyObject *Hot_start_feed(Hot *h, PyObject *args) {
    Py_ssize_t i;
    double due;
    if (!PyArg_ParseTuple(args, "nd", &i, &due))
        return NULL;
    if (i < 0 || i >= h->nfeed) {
        PyErr_SetString(PyExc_IndexError, "no such feed");
        return NULL;
    }
    Feed *f = &h->feeds[i];
    if (f->left > 0 && !h->devs[f->dev].dropped) {
        f->due = due;
        heap_push(h, (int32_t)i);
    }
    Py_RETURN_NONE;
}

static PyObject *Hot_set_state(Hot *h, PyObject *args) {
    Py_ssize_t dev;
    int fd, state;
    if (!PyArg_ParseTuple(args, "nii", &dev, &fd, &state))
        return NULL;
    if (dev < 0 || dev >= h->ndev || state < 0 || state > 2 || (state == 1 && fd < 0)) {
        PyErr_SetString(PyExc_ValueError, "bad device state");
        return NULL;
    }
    h->devs[dev].fd = fd;
    h->devs[dev].state = state;
    Py_RETURN_NONE;
}

static PyObject *Hot_drop(Hot *h, PyObject *arg) {
    Py_ssize_t dev = PyLong_AsSsize_t(arg);
    if (dev == -1 && PyErr_Occurred())
        return NULL;
    if (dev < 0 || dev >= h->ndev) {
        PyErr_SetString(PyExc_IndexError, "no such device");
        return NULL;
    }
    h->devs[dev].dropped = 1;
    h->devs[dev].state = 0;
    Py_RETURN_NONE;
}

static PyObject *Hot_next_due(Hot *h, PyObject *unused) {
    if (h->nheap == 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(h->feeds[h->heap[0]].due);
}

static PyObject *Hot_done(Hot *h, PyObject *unused) { return PyBool_FromLong(h->nheap == 0); }

static int hand_back(PyObject **list, Py_ssize_t dev, int kind, PyObject *item) {
    if (item == NULL)
        return -1;
    if (*list == NULL && (*list = PyList_New(0)) == NULL) {
        Py_DECREF(item);
        return -1;
    }
    PyObject *t = Py_BuildValue("niN", dev, kind, item);
    if (t == NULL)
        return -1;
    int rc = PyList_Append(*list, t);
    Py_DECREF(t);
    return rc;
}

static PyObject *Hot_send_due(Hot *h, PyObject *args) {
    double now;
    long long ts;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "dLn", &now, &ts, &limit))
        return NULL;
    PyObject *back = NULL;
    Py_ssize_t sent = 0, skipped = 0, nlater = 0;
    const int device_ts = h->device_ts;
    char *const body0 = h->buf + HDR;
    /* The topic field is the same in every packet. */
    body0[0] = (char)(h->topic_len >> 8);
    body0[1] = (char)(h->topic_len & 0xFF);
    memcpy(body0 + 2, h->topic, h->topic_len);
    char *const payload = body0 + 2 + h->topic_len;
    int failed = 0;
    while (h->nheap > 0 && sent + skipped < limit) {
        int32_t fi = h->heap[0];
        Feed *f = &h->feeds[fi];
        if (f->due > now)
            break;
        heap_pop(h);
        Dev *d = &h->devs[f->dev];
        if (d->dropped)
            continue; /* not sent, not counted, never again */
        /* Counted against its quota whether it goes out or not (as the Python engine). */
        if (--f->left > 0) {
            f->due += f->period;
            h->later[nlater++] = fi; /* back on the schedule after this wake-up: at most one
                                        message per feed per call, like the Python wheel */
        }
        if (d->state == 0) {
            skipped++; /* not sent, so not in the ground truth */
            continue;
        }
        int neg = 0;
        int64_t v = f->kind == 1 ? draw(f) : f->kind >= 2 ? draw_scaled(f, &neg) : 0;
        int64_t t = ts > d->last_ts ? ts : d->last_ts + 1; /* strictly increasing per device */
        d->last_ts = t;
        char *p = payload;
        if (device_ts) {
            memcpy(p, TS_HEAD, sizeof TS_HEAD - 1);
            p = put_int(p + sizeof TS_HEAD - 1, t);
            memcpy(p, TS_MID, sizeof TS_MID - 1);
            p += sizeof TS_MID - 1;
        } else {
            *p++ = '{';
        }
        memcpy(p, f->pre, f->pre_len);
        p += f->pre_len;
        if (f->kind >= 1) {
            if (f->quote)
                *p++ = '"';
            p = f->kind == 1 ? put_int(p, v) : put_scaled(p, v, neg, f->decimals, f->pow10);
            if (f->quote)
                *p++ = '"';
            memcpy(p, f->post, f->post_len);
            p += f->post_len;
        }
        *p++ = '}';
        if (device_ts)
            *p++ = '}';
        /* Fixed header in front: PUBLISH, QoS 0, remaining length as a varint. */
        size_t rl = (size_t)(p - body0);
        unsigned char vi[4];
        int k = 0;
        do {
            unsigned char b = rl & 0x7F;
            rl >>= 7;
            vi[k++] = b | (rl ? 0x80 : 0);
        } while (rl && k < 4);
        char *pkt = body0 - k - 1;
        pkt[0] = 0x30;
        memcpy(pkt + 1, vi, k);
        Py_ssize_t len = p - pkt;
        if (d->state == 1) {
            ssize_t n = send(d->fd, pkt, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                    n = 0;
                } else {
                    int e = errno;
                    d->state = 0;
                    skipped++;
                    if (hand_back(&back, f->dev, 2, PyLong_FromLong(e)) < 0) {
                        failed = 1;
                        break;
                    }
                    continue;
                }
            }
            if (n < len) {
                d->state = 2; /* the rest, and later packets, wait in Python's buffer */
                if (hand_back(&back, f->dev, 0,
                              PyBytes_FromStringAndSize(pkt + n, len - n)) < 0) {
                    failed = 1;
                    break;
                }
            }
        } else if (hand_back(&back, f->dev, 1, PyBytes_FromStringAndSize(pkt, len)) < 0) {
            failed = 1;
            break;
        }
        sent++;
        d->sent++;
        if (f->num_mode) {
            int64_t num = (f->num_mode == 1 ? v : f->const_num) * f->gt_mul;
            d->sum += num;
            if (add_window(h, d->zone, t, num) < 0) {
                PyErr_NoMemory();
                failed = 1;
                break;
            }
        }
    }
    for (Py_ssize_t i = 0; i < nlater; i++)
        heap_push(h, h->later[i]);
    if (failed) {
        Py_XDECREF(back);
        return NULL;
    }
    if (back == NULL) {
        back = Py_None;
        Py_INCREF(back);
    }
    return Py_BuildValue("nnN", sent, skipped, back);
}

static PyObject *int128(i128 v) { /* a Python int (NULL on error: Py_BuildValue's "N" fails) */
    if (v >= INT64_MIN && v <= INT64_MAX)
        return PyLong_FromLongLong((long long)v);
    unsigned char b[16];
    unsigned __int128 u = (unsigned __int128)v;
    for (int i = 0; i < 16; i++, u >>= 8)
        b[i] = (unsigned char)(u & 0xFF);
    return _PyLong_FromByteArray(b, 16, 1, 1);
}

static PyObject *Hot_take(Hot *h, PyObject *unused) {
    PyObject *devs = PyList_New(0), *wins = PyList_New(0);
    if (devs == NULL || wins == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < h->ndev; i++) {
        Dev *d = &h->devs[i];
        if (d->sent == 0)
            continue;
        PyObject *t = Py_BuildValue("nLN", i, (long long)d->sent, int128(d->sum));
        if (t == NULL || PyList_Append(devs, t) < 0) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
    }
    for (Py_ssize_t i = 0; i < h->nwin; i++) {
        Win *w = &h->wins[i];
        PyObject *t = Py_BuildValue("iLLNLLL", (int)w->zone, (long long)w->start,
                                    (long long)w->count, int128(w->sum), (long long)w->min,
                                    (long long)w->max, (long long)w->near);
        if (t == NULL || PyList_Append(wins, t) < 0) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
    }
    for (Py_ssize_t i = 0; i < h->ndev; i++)
        h->devs[i].sent = h->devs[i].sum = 0;
    h->nwin = 0;
    for (int32_t z = 0; z < h->nzone; z++)
        h->zone_last[z] = -1;
    return Py_BuildValue("NN", devs, wins);
fail:
    Py_XDECREF(devs);
    Py_XDECREF(wins);
    return NULL;
}

static PyMethodDef Hot_methods[] = {
    {"add_feed", (PyCFunction)Hot_add_feed, METH_VARARGS, "add one stream of one device"},
    {"start_feed", (PyCFunction)Hot_start_feed, METH_VARARGS, "schedule a feed's first message"},
    {"set_state", (PyCFunction)Hot_set_state, METH_VARARGS, "a device's socket and state"},
    {"drop", (PyCFunction)Hot_drop, METH_O, "stop scheduling a device"},
    {"send_due", (PyCFunction)Hot_send_due, METH_VARARGS, "send every due message"},
    {"next_due", (PyCFunction)Hot_next_due, METH_NOARGS, "the next message's due time"},
    {"done", (PyCFunction)Hot_done, METH_NOARGS, "nothing left to send"},
    {"take", (PyCFunction)Hot_take, METH_NOARGS, "the ground truth counted since the last take"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HotType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tbspark.simulate._fastsend.Hot",
    .tp_basicsize = sizeof(Hot),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "the simulator's QoS 0 hot path: schedule, values, packets, send(), ground truth",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Hot_init,
    .tp_dealloc = (destructor)Hot_dealloc,
    .tp_methods = Hot_methods,
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_fastsend", "the simulator's hot path in C", -1, NULL,
};

PyMODINIT_FUNC PyInit__fastsend(void) {
    if (PyType_Ready(&HotType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    Py_INCREF(&HotType);
    if (PyModule_AddObject(m, "Hot", (PyObject *)&HotType) < 0) {
        Py_DECREF(&HotType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
