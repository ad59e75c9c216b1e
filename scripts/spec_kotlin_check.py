"""The courier app's client, generated from openapi.yaml, must be usable as generated (issue 25).

Two halves:

1. The spec's shape, read from the YAML, so that a failure says what to change in the spec:
   - every operation has exactly one tag, and it is one of the tags the spec declares (a generated
     client gets one API class per tag: CourierAppApi, AdminApi, PbxApi, OperationsApi; an untagged
     operation would land in a DefaultApi);
   - every response and request body schema is a `$ref` to a named component, or a plain string
     (`type: string`, optionally with `format: binary`); no component has an object schema written
     inline in a property, an array's items or additionalProperties (a generator names those
     itself: `listCouriers_200_response`, `Me_courier`, ..., names that change when the spec moves);
   - an operation has one success schema per media type, and one across its JSON media types (a
     generator types the method by one of them, and the others' bodies then fail to parse);
   - a success that is not JSON is a file: no schema (the method returns nothing) or `type: string,
     format: binary` (the method returns the body as a file, whatever its media type: the Kotlin
     generator leaves text/csv and text/event-stream out of Accept and reads only JSON, plain text
     and octet-stream otherwise), and it is not offered beside a JSON one. The one exception is
     getRoute (tag pbx): Asterisk's CURL() asks it for `text/plain`, no generated client calls it.

2. The Kotlin client generated with OpenAPI Generator (the options the README gives the app's
   developers): the generator's output must have no WARN or ERROR line and no "Inline schema
   created" line (it logs those at INFO: each is a model named by the generator), and the
   generated code must be what the app needs - no DefaultApi, one API class per tag, a model file
   for named components only, and each operation's method returning the one type the spec says
   (createCallback: Callback; exportCallbacks, getDialplan, streamCallbackEvents: java.io.File).
   Every other line the generator prints is INFO about what it writes (files, models, the Kotlin
   formatter it did not run, its banner) and is allowed.

The generated code is not compiled: its dependencies (OkHttp 4, Okio 3, Moshi with its Kotlin
adapter, the Kotlin standard library and compiler) come from Maven Central, which this project's
machines cannot reach, and Debian carries OkHttp 3 and Kotlin 1.3, older than the code needs.

usage: spec_kotlin_check.py SPEC WORK_DIR   (runs `openapi-generator-cli` from this Python's venv)
"""

import pathlib
import re
import shutil
import subprocess
import sys
import time

import yaml

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
PACKAGE = "dev.dialback.client"
# What the README's "For the app's developers" tells the app's developers to generate with.
GENERATOR_OPTIONS = [
    "-g",
    "kotlin",
    "--library",
    "jvm-okhttp4",
    "--additional-properties",
    f"serializationLibrary=moshi,dateLibrary=java8,enumUnknownDefaultCase=true,packageName={PACKAGE}",
]
# Operations whose success is JSON and something else, by design (see the module's docstring).
MIXED_SUCCESS_ALLOWED = {"getRoute"}


def is_json(media_type):
    return media_type == "application/json" or media_type.endswith("+json")


def follow(doc, node):
    """Follows `$ref`s (to responses, parameters, ...) within the document."""
    while isinstance(node, dict) and "$ref" in node:
        target = doc
        for key in node["$ref"].removeprefix("#/").split("/"):
            target = target[key]
        node = target
    return node


def plain_string(schema):
    return schema.get("type") == "string" and set(schema) <= {"type", "format", "example", "description"}


def schema_key(schema):
    """What a generator would type a body as: the component's name, or the plain type."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    if plain_string(schema):
        return f"string/{schema.get('format', '')}"
    return "an inline schema"


def operations(spec):
    for template, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield template, method, item[method]


def inline_objects(schema, at):
    """Object schemas written inline below a component (not the component itself, and not an
    allOf/oneOf/anyOf member, which generators merge into the component)."""
    if not isinstance(schema, dict):
        return
    for name, sub in (schema.get("properties") or {}).items():
        yield from nested(sub, f"{at}.properties.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nested(schema["items"], f"{at}.items")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nested(schema["additionalProperties"], f"{at}.additionalProperties")
    for key in ("allOf", "oneOf", "anyOf"):
        for i, member in enumerate(schema.get(key) or []):
            yield from inline_objects(member, f"{at}.{key}[{i}]")


def nested(schema, at):
    if "$ref" in schema:
        return
    if schema.get("type") == "object" and schema.get("properties"):
        yield at
    yield from inline_objects(schema, at)


def structure_problems(spec):
    problems = []
    declared = {tag["name"] for tag in spec.get("tags", [])}
    for template, method, op in operations(spec):
        name = op.get("operationId", f"{method.upper()} {template}")
        tags = op.get("tags") or []
        if len(tags) != 1:
            problems.append(
                f"{name}: has {len(tags)} tags {tags}; give it exactly one (courier-app, admin, pbx, operations)"
            )
        elif tags[0] not in declared:
            problems.append(f"{name}: tag {tags[0]!r} is not declared in the spec's top-level tags")
        body = follow(spec, op.get("requestBody") or {})
        for media_type, media in (body.get("content") or {}).items():
            if "schema" in media and "$ref" not in media["schema"]:
                problems.append(f"{name}: the {media_type} request body's schema is inline; make it a named component")
        success = {}  # media type -> {schema key}
        for status, response in op["responses"].items():
            response = follow(spec, response)
            for media_type, media in (response.get("content") or {}).items():
                schema = media.get("schema")
                if schema is not None and "$ref" not in schema and not plain_string(schema):
                    problems.append(
                        f"{name}: the {status} {media_type} answer's schema is inline; make it a named component"
                    )
                if str(status).startswith("2"):
                    success.setdefault(media_type, set()).add(schema_key(schema) if schema is not None else "none")
        json_schemas = set().union(*[keys for media_type, keys in success.items() if is_json(media_type)])
        if len(json_schemas) > 1:
            problems.append(
                f"{name}: two or more success schemas ({', '.join(sorted(json_schemas))}); a generated client "
                "types the method by one and fails on the others: answer one schema (the rest as problems)"
            )
        for media_type, keys in success.items():
            if is_json(media_type):
                continue
            if len(keys) > 1:
                problems.append(f"{name}: {media_type} answers {len(keys)} different schemas on success")
            if json_schemas and name not in MIXED_SUCCESS_ALLOWED:
                problems.append(
                    f"{name}: answers {media_type} beside JSON; a generated client only asks for one: give the "
                    f"{media_type} answer an operation (a path) of its own"
                )
            elif not json_schemas and not keys <= {"none", "string/binary"}:
                problems.append(
                    f"{name}: its {media_type} success schema is not `type: string, format: binary`, so a "
                    "generated client cannot return the body"
                )
    for name, schema in spec["components"]["schemas"].items():
        for at in inline_objects(schema, name):
            problems.append(f"components.schemas.{at}: an object schema written inline; make it a named component")
    return problems


def expected_return_type(spec, op):
    for status, response in op["responses"].items():
        if not str(status).startswith("2"):
            continue
        for media_type, media in (follow(spec, response).get("content") or {}).items():
            schema = media.get("schema")
            if schema is None:
                continue
            if is_json(media_type):
                return schema_key(schema)
            if schema.get("format") == "binary":
                return "java.io.File"
            return "kotlin.String"
    return "Unit"


def generate(spec_path, out):
    generator = pathlib.Path(sys.executable).parent / "openapi-generator-cli"
    started = time.monotonic()
    run = subprocess.run(
        [str(generator), "generate", "-i", str(spec_path), "-o", str(out), *GENERATOR_OPTIONS],
        capture_output=True,
        text=True,
        check=False,
    )
    return run, time.monotonic() - started


def generator_problems(output):
    problems = []
    for line in output.splitlines():
        if re.search(r"\b(WARN|WARNING|ERROR)\b", line):
            problems.append(f"the generator warned: {line.strip()}")
        elif "Inline schema created" in line:
            problems.append(f"the generator named a schema itself: {line.strip()[:200]}")
    return problems


def code_problems(spec, out):
    problems = []
    source = out / "src/main/kotlin" / PACKAGE.replace(".", "/")
    apis = {p.stem for p in (source / "apis").glob("*.kt")}
    expected_apis = {
        "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", tag["name"])) + "Api"
        for tag in spec.get("tags", [])
    }
    if "DefaultApi" in apis:
        problems.append("the generated client has a DefaultApi: an operation without a tag")
    if apis != expected_apis:
        problems.append(f"the generated API classes are {sorted(apis)}, expected {sorted(expected_apis)}")
    models = {p.stem for p in (source / "models").glob("*.kt")}
    unnamed = sorted(models - set(spec["components"]["schemas"]))
    if unnamed:
        problems.append(f"models the generator named itself (not components of the spec): {unnamed}")
    methods = {}
    for api in (source / "apis").glob("*.kt"):
        for match in re.finditer(r"^    fun (\w+)\(.*\) : ([\w.<>?]+) \{$", api.read_text(), re.MULTILINE):
            methods[match.group(1)] = match.group(2)
    for template, method, op in operations(spec):
        name = op["operationId"]
        expected = expected_return_type(spec, op)
        got = methods.get(name)
        if got is None:
            problems.append(f"{name}: no method in the generated client")
        elif got != expected:
            problems.append(f"{name}: the generated method returns {got}, expected {expected}")
    return problems, methods


def main():
    spec_path, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    spec = yaml.safe_load(spec_path.read_text())
    problems = structure_problems(spec)
    for problem in problems:
        print(f"openapi.yaml: {problem}", file=sys.stderr)
    if shutil.which("java") is None:
        print("spec_kotlin_check: no `java` on PATH (Debian's default-jre-headless)", file=sys.stderr)
        return 1
    if not (pathlib.Path(sys.executable).parent / "openapi-generator-cli").exists():
        print("spec_kotlin_check: no openapi-generator-cli in this Python's venv (PyPI)", file=sys.stderr)
        return 1
    out = work / "kotlin-client"
    shutil.rmtree(out, ignore_errors=True)
    run, seconds = generate(spec_path, out)
    (work / "kotlin-generator.log").write_text(run.stdout + run.stderr)
    if run.returncode != 0:
        print(run.stdout + run.stderr, file=sys.stderr)
        print(f"spec_kotlin_check: the generator failed (exit {run.returncode})", file=sys.stderr)
        return 1
    generated = generator_problems(run.stdout + run.stderr)
    code, methods = code_problems(spec, out)
    for problem in generated + code:
        print(f"kotlin client: {problem}", file=sys.stderr)
    total = len(problems) + len(generated) + len(code)
    print(
        f"spec_kotlin_check: generated the Kotlin client in {seconds:.1f} s ({len(list(operations(spec)))} "
        f"operations), "
        f"{total} problems; createCallback returns {methods.get('createCallback')}, exportCallbacks "
        f"{methods.get('exportCallbacks')}, getDialplan {methods.get('getDialplan')}"
    )
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
