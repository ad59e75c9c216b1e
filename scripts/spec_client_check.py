"""A client generated from openapi.yaml must build without warnings and read every example answer.

Generates a Python client with openapi-python-client (--fail-on-warning), then feeds each
response in api/examples through the parser the generator wrote for its operation: a schema a
generator misreads (a nullable enum that does not list null, say) makes it raise there.

The spec's own route, GET /openapi.yaml, answers application/yaml, which the generator warns it
cannot model; that route is left out of the generated client. Operations are grouped by their one
tag (courier-app, admin, pbx, operations): the generator writes each under api/<tag>/.

usage: spec_client_check.py SPEC EXAMPLES_DIR WORK_DIR
"""

import importlib
import json
import os
import pathlib
import re
import subprocess
import sys

import httpx
import yaml

spec_path, examples_dir, work = (pathlib.Path(a) for a in sys.argv[1:4])
spec = yaml.safe_load(spec_path.read_text())
spec["paths"].pop("/openapi.yaml")
client_spec = work / "client-spec.yaml"
client_spec.write_text(yaml.safe_dump(spec, sort_keys=False))
output = work / "client" / "dialback_client"
venv_bin = pathlib.Path(sys.executable).parent
subprocess.run(
    [str(venv_bin / "openapi-python-client"), "generate", "--path", str(client_spec), "--output-path", str(output),
     "--meta", "none", "--fail-on-warning"],
    check=True,
    # The generator formats what it writes with the venv's ruff, and warns when it cannot find it.
    env={**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"},
)

sys.path.insert(0, str(output.parent))
from dialback_client import Client  # noqa: E402  (generated just above)

client = Client(base_url="http://127.0.0.1", raise_on_unexpected_status=True)
tag_of = {
    operation["operationId"]: operation["tags"][0]
    for item in spec["paths"].values()
    for operation in item.values()
    if isinstance(operation, dict) and "operationId" in operation
}
failures = []
for example_file in sorted(examples_dir.glob("*.json")):
    # Examples are named <operationId>.<status>[-variant].json; the generator names modules (and
    # the tag's package) in snake case.
    operation = example_file.name.split(".")[0]
    module_name = re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()
    package = re.sub(r"[^a-z0-9]+", "_", tag_of[operation].lower())
    module = importlib.import_module(f"dialback_client.api.{package}.{module_name}")
    answer = json.loads(example_file.read_text())["response"]
    content_type = "application/problem+json" if answer["status"] >= 400 else "application/json"
    response = httpx.Response(
        answer["status"], headers={"content-type": content_type}, content=json.dumps(answer.get("body")).encode()
    )
    try:
        module._parse_response(client=client, response=response)
    except Exception as e:  # noqa: BLE001  (any failure to read an example is the finding)
        failures.append(f"{example_file.name}: {type(e).__name__}: {e}")
for failure in failures:
    print(f"the generated client cannot read {failure}", file=sys.stderr)
print(f"the generated client read {len(list(examples_dir.glob('*.json'))) - len(failures)} example answers")
sys.exit(1 if failures else 0)
