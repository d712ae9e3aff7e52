"""The event messages ThingsBoard sends into rule chains besides device data, built as it builds them:
device state events (DefaultDeviceStateService.pushRuleEngineMessage), and the entity actions of
the REST API (EntityActionService.pushEntityActionToRuleEngine): ENTITY_CREATED, ATTRIBUTES_UPDATED,
TIMESERIES_UPDATED. Pure functions: a TbMsg from what happened."""

from __future__ import annotations

import time

from tbspark.platform import values
from tbspark.platform.rules.msg import CONNECT_EVENT, DISCONNECT_EVENT, ENTITY_CREATED, TbMsg
from tbspark.platform.store.models import NULL_UUID

ACTIVITY_EVENT = "ACTIVITY_EVENT"
INACTIVITY_EVENT = "INACTIVITY_EVENT"
ATTRIBUTES_UPDATED = "ATTRIBUTES_UPDATED"
TIMESERIES_UPDATED = "TIMESERIES_UPDATED"
__all__ = ["CONNECT_EVENT", "DISCONNECT_EVENT", "ACTIVITY_EVENT", "INACTIVITY_EVENT", "ENTITY_CREATED",
           "ATTRIBUTES_UPDATED", "TIMESERIES_UPDATED", "device_state_msg", "entity_created_msg",
           "attributes_updated_msg", "timeseries_updated_msg"]


def _now() -> int:
    return int(time.time() * 1000)


def _customer(customer_id: str | None) -> str | None:
    return customer_id if customer_id and customer_id != NULL_UUID else None


def device_state_msg(device, msg_type: str, state: dict) -> TbMsg:
    """CONNECT/DISCONNECT/ACTIVITY/INACTIVITY_EVENT: data is the device state (without ``active`` for
    CONNECT_EVENT), metadata the device's name, label (when set) and type, and scope SERVER_SCOPE."""
    md = {"deviceName": device.name, "deviceType": device.type}
    if getattr(device, "label", None) is not None:
        md["deviceLabel"] = device.label
    md["scope"] = "SERVER_SCOPE"
    return TbMsg(msg_type, ("DEVICE", device.id), state, md, device.tenant_id, _customer(device.customer_id),
                 None, device.profile_id, _now())


def _user_metadata(user) -> dict:
    md = {}
    if user is not None:
        md["userId"] = user.id
        md["userName"] = user.email
        md["userEmail"] = user.email
        if getattr(user, "first_name", None) is not None:
            md["userFirstName"] = user.first_name
        if getattr(user, "last_name", None) is not None:
            md["userLastName"] = user.last_name
    return md


def _target(entity_type: str, entity) -> tuple[str | None, str | None, str | None]:
    """(tenant id, customer id, profile id) of the originator: which chain gets the message."""
    if entity is None:
        return None, None, None
    profile = getattr(entity, "profile_id", None) if entity_type == "DEVICE" else None
    return entity.tenant_id, _customer(getattr(entity, "customer_id", None)), profile


def entity_created_msg(entity_type: str, entity, entity_json: dict, user=None, gateway_id: str | None = None) -> TbMsg:
    """ENTITY_CREATED: data is the entity as the REST API returns it. Created through the API, metadata
    names the user and the entity; created by a gateway, it names the gateway (DefaultTransportApiService)."""
    tenant, customer, profile = _target(entity_type, entity)
    if gateway_id is not None:
        md = {"customerId": customer} if customer else {}
        md["gatewayId"] = gateway_id
    else:
        md = _user_metadata(user)
        if customer:
            md["customerId"] = customer
        md["entityName"] = entity.name
        md["entityType"] = entity_type
    return TbMsg(ENTITY_CREATED, (entity_type, entity.id), entity_json, md, tenant, customer, None, profile, _now())


def attributes_updated_msg(entity_type: str, entity, scope: str, typed: dict, user=None) -> TbMsg:
    """ATTRIBUTES_UPDATED after a REST save of SERVER/SHARED attributes: data the saved key → value,
    metadata the user and ``scope``."""
    tenant, customer, profile = _target(entity_type, entity)
    md = _user_metadata(user)
    if customer:
        md["customerId"] = customer
    md["scope"] = scope
    data = {k: values.render_typed(kind, v) for k, (kind, v) in typed.items()}
    return TbMsg(ATTRIBUTES_UPDATED, (entity_type, entity.id), data, md, tenant, customer, None, profile, _now())


def timeseries_updated_msg(entity_type: str, entity, entries: list, user=None) -> TbMsg:
    """TIMESERIES_UPDATED after a REST save of time series: data ``{"timeseries": [{"ts", "values"}]}``
    grouped by timestamp."""
    tenant, customer, profile = _target(entity_type, entity)
    md = _user_metadata(user)
    if customer:
        md["customerId"] = customer
    by_ts: dict[int, dict] = {}
    for ts, key, kind, v in entries:
        by_ts.setdefault(ts, {})[key] = values.render_typed(kind, v)
    data = {"timeseries": [{"ts": ts, "values": vals} for ts, vals in by_ts.items()]}
    return TbMsg(TIMESERIES_UPDATED, (entity_type, entity.id), data, md, tenant, customer, None, profile, _now())
