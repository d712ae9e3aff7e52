"""Record what Gson (ThingsBoard 4.3.1.3's JSON parser, 2.13.2) makes of lenient payloads.

    python tests/differential/record_gson.py [path/to/gson-2.13.2.jar]

Compiles gson/GsonProbe.java with the JDK, runs it on CASES and writes expected/gson_lenient.json,
which tests/differential/test_lenient_json.py holds tbspark/platform/lenient_json.py to. The jar is
looked up in ~/.m2 and in pyspark's jars (pyspark 4 ships the same Gson) when not given.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "expected" / "gson_lenient.json"
GSON_VERSION = "2.13.2"

CASES = [
    # accepted leniently
    "{'a':1}", "{a:1}", "{'a':'x'}", "{a:hello}", "[1,]", "[1,,2]", "[,1]", '{"a":1;"b":2}', '{"a"=1}',
    '{"a"=>1}', "[1;2]", '// c\n{"a":1}', '# c\n{"a":1}', '/* c */{"a":1}', '{"a":1 /* x */}',
    ")]}'\n{\"a\":1}", '{"a":True}', '{"a":TRUE}', '{"a":tRuE}', '{"a":Null}', '{"a":NaN}', '{"a":-Infinity}',
    '{"a":Infinity}', '{"a":01}', '{"a":1.}', '{"a":.5}', '{"a":+1}', '{"a":0x10}', '{"a":1}  ', "", "   ",
    "{'a':\"b'c\"}", '{"a":[1,2,]}', "{a.b:1}", "{a-b:1}", "{a:b;c:d}", "{'ts':1700000000000,'values':{'t':1}}",
    "{\"a\":'x'}", '{"a":\n1}', '{\u00a0"a":1}', '{"a":"\t"}', "{'a':'\\u0041'}", "{'':1}", '{"a":-}',
    "[{'ts':1,'values':{'x':1}},]", '\ufeff{"a":1}', "{temperature:21.5,humidity:40,ok:true,name:'dev 1'}",
    "{'values':{'t':1},'ts':'1700000000000'}", "{a:1e5,b:1.0,c:12345678901234567890}",
    '{"a":"x\x01"}',
    # strict JSON, for reference
    '{"a":1}', '{"a":1e5}', "null", '"str"', "42", '{"a":-0}', '{"a":1.0e+2}', '{"a":[]}', '{"a":{}}',
    '{"a":12345678901234567890}', '{"":1}', '{"a":"1"}',
    # refused even leniently
    "{a:hello world}", '{"a":1,}', '{"a":{"b":1,}}', '{"a" 1}', '{"a":1,,"b":2}', "{a/b:1}", "{a\\b:1}",
    "{a:b#c}", "{a:b=c}", '{"a":1}x', '{"a":1} {"b":2}', '{"a":1}\u00a0', '{"a":"x\\qy"}', '{"a":1',
    '{"a":[1,2}', "{a:}", "{:1}", '{"a":1}//tail', '{"a":1}#tail', "{'a':'x}", "/* open", "{'a':'\\u00zz'}",
]


def find_jar() -> str:
    candidates = glob.glob(os.path.expanduser(f"~/.m2/repository/com/google/code/gson/gson/{GSON_VERSION}/*.jar"))
    candidates += glob.glob(str(Path(sys.prefix) / f"lib/python*/site-packages/pyspark/jars/gson-{GSON_VERSION}.jar"))
    if not candidates:
        sys.exit(f"gson-{GSON_VERSION}.jar not found: pass its path")
    return candidates[0]


def main() -> None:
    jar = sys.argv[1] if len(sys.argv) > 1 else find_jar()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["javac", "-d", tmp, "-cp", jar, str(HERE / "gson" / "GsonProbe.java")], check=True)
        cases = Path(tmp) / "cases.txt"
        cases.write_text("".join(json.dumps(c) + "\n" for c in CASES), encoding="utf-8")
        out = subprocess.run(["java", "-cp", f"{jar}{os.pathsep}{tmp}", "GsonProbe", str(cases)],
                             check=True, capture_output=True, text=True).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    OUT.write_text(json.dumps({"gson": GSON_VERSION, "cases": records}, indent=1, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    print(f"{len(records)} cases → {OUT}")


if __name__ == "__main__":
    main()
