"""Offline checks of the Terraform under infra/: parsed with python-hcl2 and asserted on.

No provider can be downloaded here, so these stand in for `terraform validate` on what matters:
failure destinations, bucket protection, least-privilege IAM, alarm actions, and that every name
and setting comes from infra/settings.json, the file the local stack reads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from tests.infra.hcl import INFRA, module, modules, ref, statements
from totes_cdc.settings import SETTINGS_PATH

RAW_SETTINGS: dict[str, Any] = json.loads(SETTINGS_PATH.read_text(encoding="utf-8"))

# Actions AWS grants only on Resource "*" (no resource-level permissions).
STAR_RESOURCE_ACTIONS = {
    "xray:PutTraceSegments", "xray:PutTelemetryRecords", "cloudwatch:PutMetricData",
    "ecr:GetAuthorizationToken", "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
}


def all_policy_documents() -> list[tuple[str, str, dict[str, Any]]]:
    return [(folder, name, doc) for folder, mod in modules().items()
            for name, doc in mod.data("aws_iam_policy_document").items()]


def test_every_tf_file_parses() -> None:
    assert {"modules/pipeline", "envs/dev", "envs/prod"} <= set(modules())
    for name in ("encryption", "stream", "storage", "queues", "secrets", "network_access", "capture",
                 "lambda_function", "stream_processor", "loader", "monitoring"):
        assert module(name).blocks, name


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform binary not installed")
def test_terraform_fmt_check_passes() -> None:
    result = subprocess.run(["terraform", "fmt", "-check", "-recursive", str(INFRA)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"terraform fmt would change: {result.stdout}"


def test_environments_keep_remote_state_in_s3_with_locking() -> None:
    for env in ("dev", "prod"):
        backend = modules()[f"envs/{env}"].blocks["terraform"]["backend"][0]["s3"]
        assert backend["use_lockfile"] is True and backend["encrypt"] is True
        assert backend["key"] == f"totes-cdc/{env}.tfstate"
        assert modules()[f"envs/{env}"].modules["pipeline"]["environment"] == env


# --- one settings file, no drift ------------------------------------------------------------------

@pytest.mark.parametrize("folder", ["modules/pipeline", "envs/dev", "envs/prod"])
def test_terraform_reads_the_settings_file_the_local_stack_reads(folder: str) -> None:
    expression = modules()[folder].locals["settings"]
    match = re.fullmatch(r'\$\{jsondecode\(file\("\$\{path\.module\}/(.+)"\)\)\}', expression)
    assert match, expression
    assert (INFRA / folder / match.group(1)).resolve() == SETTINGS_PATH


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value] if isinstance(value, str) else []


def test_no_setting_is_copied_into_the_terraform() -> None:
    tf_text = "\n".join(m.text for m in modules().values())
    copied = sorted({leaf for leaf in _leaves(RAW_SETTINGS) if f'"{leaf}"' in tf_text})
    assert not copied, f"hard-coded in infra/*.tf instead of read from settings.json: {copied}"


def test_resources_the_local_stack_creates_are_named_from_the_same_settings() -> None:
    """The emulator's resources (totes_ops.stack.emulator.create_resources) against Terraform's."""
    stream = module("stream").resources("aws_kinesis_stream")["changes"]
    assert stream["name"] == "${var.settings.stream.name}"
    assert stream["shard_count"] == "${var.on_demand ? null : var.settings.stream.shard_count}"
    assert stream["retention_period"] == "${var.settings.stream.retention_hours}"

    buckets = module("storage").locals["data_buckets"]
    for role in RAW_SETTINGS["buckets"]:
        assert buckets[role] == f"${{var.settings.buckets.{role}}}${{var.name_suffix}}"

    queues = module("queues").resources("aws_sqs_queue")
    for role in RAW_SETTINGS["queues"]:
        assert queues[role]["name"] == f"${{var.settings.queues.{role}}}"
    assert queues["processed_files"]["visibility_timeout_seconds"] == (
        "${var.settings.loader_mapping.visibility_timeout_seconds}")

    notification = module("queues").resources("aws_s3_bucket_notification")["processed"]["queue"][0]
    assert notification["filter_prefix"] == "${var.settings.prefixes.processed}"
    assert notification["filter_suffix"] == "${var.settings.suffixes.processed}"
    assert notification["events"] == ["s3:ObjectCreated:*"]

    topic = module("monitoring").resources("aws_sns_topic")["alarms"]
    assert topic["name"] == "${var.settings.alarm_topic}"

    secret = module("secrets").resources("aws_secretsmanager_secret")["this"]
    assert (secret["for_each"], secret["name"]) == ("${var.settings.secrets}", "${each.value}")
    assert "aws_secretsmanager_secret_version" not in module("secrets").blocks.get("resource", {}), \
        "secret values must stay out of Terraform state"

    assert module("monitoring").locals["ns"] == "${var.settings.metrics_namespace}"


def test_deployed_processes_get_the_suffixed_bucket_names() -> None:
    pipeline = module("pipeline")
    overrides = pipeline.locals["settings_overrides"]
    for role in RAW_SETTINGS["buckets"]:
        assert f"module.storage.names.{role}" in overrides
    assert pipeline.modules["capture"]["settings_overrides"] == "${local.settings_overrides}"
    for name in ("stream_processor", "loader"):
        environment = pipeline.modules[name]["environment"]
        assert environment["TOTES_CDC_SETTINGS_OVERRIDES"] == "${local.settings_overrides}"
    warehouse_secret = pipeline.modules["loader"]["environment"]["TOTES_CDC_WAREHOUSE_SECRET"]
    assert warehouse_secret == "${local.settings.secrets.warehouse}"


# --- Lambdas and their failure destinations -------------------------------------------------------

def _function_modules() -> dict[str, str]:
    """Module folder -> name of its lambda_function module call (each call is one Lambda)."""
    found = {}
    for folder, mod in modules().items():
        for call, body in mod.modules.items():
            if body["source"] == "../lambda_function":
                found[folder] = call
    return found


def test_there_are_exactly_the_two_lambdas_each_from_its_settings() -> None:
    assert set(_function_modules()) == {"modules/stream_processor", "modules/loader"}
    assert set(module("lambda_function").resources("aws_lambda_function")) == {"this"}
    for name in ("stream_processor", "loader"):
        mod = module(name)
        assert mod.locals["fn"] == f"${{var.settings.deploy.functions.{name}}}"
        call = mod.modules["function"]
        assert call["name"] == "${local.fn.name}" and call["handler"] == "${local.fn.handler}"
        assert call["artifact_path"] == "${var.repo_root}/${local.fn.artifact}"
    functions = RAW_SETTINGS["deploy"]["functions"]
    assert functions["stream_processor"]["handler"] == "stream_processors.handler.handler"
    assert functions["loader"]["handler"] == "warehouse_loader.handler.handler"
    assert functions["stream_processor"]["artifact"] == "dist/lambda/stream_processor.zip"
    assert functions["loader"]["artifact"] == "dist/lambda/warehouse_loader.zip"


def test_every_lambda_has_its_failure_destination() -> None:
    for folder, call in _function_modules().items():
        mappings = [m for m in modules()[folder].resources("aws_lambda_event_source_mapping").values()
                    if m["function_name"] == f"${{module.{call}.arn}}"]
        assert len(mappings) == (1 if folder == "modules/stream_processor" else 2), folder
        mapping = mappings[0]
        if folder == "modules/stream_processor":
            destination = mapping["destination_config"][0]["on_failure"][0]["destination_arn"]
            assert destination == "${var.stream_failures_queue_arn}"
            wired = module("pipeline").modules["stream_processor"]["stream_failures_queue_arn"]
            assert wired == "${module.queues.stream_failures_arn}"
            assert module("queues").blocks["output"]["stream_failures_arn"]["value"] == (
                "${aws_sqs_queue.stream_failures.arn}")
        else:
            assert mapping["event_source_arn"] == "${var.processed_files_queue_arn}"
            wired = module("pipeline").modules["loader"]["processed_files_queue_arn"]
            assert wired == "${module.queues.processed_files_arn}"
            queue = module("queues").resources("aws_sqs_queue")["processed_files"]
            redrive = queue["redrive_policy"]
            assert "deadLetterTargetArn = aws_sqs_queue.processed_files_dlq.arn" in redrive
            assert "maxReceiveCount = var.settings.loader_mapping.max_receive_count" in redrive
            # The snapshot files' queue: its own mapping, the same retry budget and DLQ.
            assert mappings[1]["event_source_arn"] == "${var.snapshot_files_queue.arn}"
            assert module("pipeline").modules["loader"]["snapshot_files_queue"] == (
                "${module.queues.snapshot_files}")
            snapshot = module("queues").resources("aws_sqs_queue")["snapshot_files"]
            assert snapshot["redrive_policy"] == redrive
            assert snapshot["visibility_timeout_seconds"] == queue["visibility_timeout_seconds"]


def test_stream_processor_mapping_equals_settings() -> None:
    mod = module("stream_processor")
    assert mod.locals["mapping"] == "${var.settings.stream_processor_mapping}"
    mapping = mod.resources("aws_lambda_event_source_mapping")["stream"]
    # The stream, or with enhanced fan-out its consumer (envs/shared/plan.tftest.hcl plans both).
    assert mapping["event_source_arn"] == (
        "${var.enhanced_fan_out ? aws_kinesis_stream_consumer.processor[0].arn : var.stream_arn}")
    terraform_names = {
        "batch_size": "batch_size",
        "maximum_batching_window_seconds": "maximum_batching_window_in_seconds",
        "bisect_batch_on_function_error": "bisect_batch_on_function_error",
        "maximum_retry_attempts": "maximum_retry_attempts",
        "maximum_record_age_seconds": "maximum_record_age_in_seconds",
        "parallelization_factor": "parallelization_factor",
        "starting_position": "starting_position",
        "function_response_types": "function_response_types",
    }
    assert set(terraform_names) == set(RAW_SETTINGS["stream_processor_mapping"]), \
        "a stream_processor_mapping setting the Terraform does not apply"
    for key, attribute in terraform_names.items():
        assert mapping[attribute] == f"${{local.mapping.{key}}}", attribute
    assert RAW_SETTINGS["stream_processor_mapping"]["function_response_types"] == [
        "ReportBatchItemFailures"]
    assert RAW_SETTINGS["stream_processor_mapping"]["bisect_batch_on_function_error"] is True


def test_loader_mapping_equals_settings() -> None:
    mod = module("loader")
    assert mod.locals["mapping"] == "${var.settings.loader_mapping}"
    mapping = mod.resources("aws_lambda_event_source_mapping")["queue"]
    assert mapping["batch_size"] == "${local.mapping.batch_size}"
    assert mapping["maximum_batching_window_in_seconds"] == "${local.mapping.maximum_batching_window_seconds}"
    assert mapping["function_response_types"] == "${local.mapping.function_response_types}"
    # The other two settings live on the queue (asserted above) and bound the function timeout.
    assert set(RAW_SETTINGS["loader_mapping"]) == {
        "batch_size", "maximum_batching_window_seconds", "function_response_types",
        "max_receive_count", "visibility_timeout_seconds", "maximum_concurrency"}
    # The local loader runner's worker count: the production environment's concurrency cap.
    assert modules()["envs/prod"].modules["pipeline"]["loader_concurrency"] == (
        RAW_SETTINGS["loader_mapping"]["maximum_concurrency"])
    # The snapshot files' mapping: one file per invocation, its own cap, and room for both caps.
    assert mod.locals["snapshot"] == "${var.settings.snapshot_loader_mapping}"
    snapshot = mod.resources("aws_lambda_event_source_mapping")["snapshot_queue"]
    assert snapshot["batch_size"] == "${local.snapshot.batch_size}"
    assert snapshot["scaling_config"][0]["maximum_concurrency"] == "${local.snapshot.maximum_concurrency}"
    assert set(RAW_SETTINGS["snapshot_loader_mapping"]) == {"batch_size", "maximum_concurrency"}
    assert RAW_SETTINGS["snapshot_loader_mapping"]["maximum_concurrency"] >= 2  # the SQS mapping's minimum
    assert mod.modules["function"]["reserved_concurrency"] == (
        "${var.reserved_concurrency + local.snapshot.maximum_concurrency}")
    environment = mod.modules["function"]["environment"]
    assert "TOTES_CDC_SNAPSHOT_QUEUE_URL = var.snapshot_files_queue.url" in environment
    assert mod.modules["function"]["timeout_seconds"] == (
        "${floor(local.mapping.visibility_timeout_seconds / 6)}")


def test_loader_and_capture_are_attached_to_the_vpc() -> None:
    vpc = module("loader").modules["function"]["vpc"]
    assert vpc == {"subnet_ids": "${var.subnet_ids}", "security_group_ids": ["${var.security_group_id}"]}
    assert module("lambda_function").resources("aws_lambda_function")["this"]["dynamic"][0]["vpc_config"]
    network = module("capture").resources("aws_ecs_service")["capture"]["network_configuration"][0]
    assert network["subnets"] == "${var.subnet_ids}"
    assert network["security_groups"] == ["${var.security_group_id}"]
    assert network["assign_public_ip"] is False
    pipeline = module("pipeline").modules
    assert pipeline["loader"]["security_group_id"] == "${module.network_access.loader_security_group_id}"
    assert pipeline["capture"]["security_group_id"] == "${module.network_access.capture_security_group_id}"


def test_lambdas_are_traced_encrypted_and_capped() -> None:
    function = module("lambda_function").resources("aws_lambda_function")["this"]
    assert function["tracing_config"][0]["mode"] == "Active"
    assert function["kms_key_arn"] == "${var.kms_key_arn}"
    assert function["reserved_concurrent_executions"] == "${var.reserved_concurrency}"
    log_group = module("lambda_function").resources("aws_cloudwatch_log_group")["this"]
    assert log_group["kms_key_id"] == "${var.kms_key_arn}"


# --- buckets --------------------------------------------------------------------------------------

def test_every_bucket_blocks_public_access_is_encrypted_and_versioned() -> None:
    buckets = [(folder, name) for folder, mod in modules().items()
               for name in mod.resources("aws_s3_bucket")]
    assert buckets == [("modules/storage", "this")], "every bucket is declared in the storage module"
    storage = module("storage")
    assert storage.resources("aws_s3_bucket")["this"]["for_each"] == "${local.buckets}"
    assert set(RAW_SETTINGS["buckets"]) <= set(storage.locals["data_buckets"])

    def companion(kind: str) -> dict[str, Any]:
        body: dict[str, Any] = storage.resources(kind)["this"]
        assert body["for_each"] == "${local.buckets}", kind
        assert body["bucket"] == "${aws_s3_bucket.this[each.key].id}", kind
        return body

    block = companion("aws_s3_bucket_public_access_block")
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert block[flag] is True, flag
    assert companion("aws_s3_bucket_versioning")["versioning_configuration"][0]["status"] == "Enabled"
    ownership = companion("aws_s3_bucket_ownership_controls")["rule"][0]
    assert ownership["object_ownership"] == "BucketOwnerEnforced"
    encryption = companion("aws_s3_bucket_server_side_encryption_configuration")["rule"][0]
    default = encryption["apply_server_side_encryption_by_default"][0]
    # SSE-KMS with the pipeline key; SSE-S3 only for the access-log bucket (logging requires it).
    assert default["sse_algorithm"] == '${each.key == "access_logs" ? "AES256" : "aws:kms"}'
    assert default["kms_master_key_id"] == '${each.key == "access_logs" ? null : var.kms_key_arn}'
    policy = companion("aws_s3_bucket_policy")["policy"]
    assert policy == "${data.aws_iam_policy_document.bucket[each.key].json}"
    lifecycle = companion("aws_s3_bucket_lifecycle_configuration")["rule"][0]
    assert lifecycle["abort_incomplete_multipart_upload"][0]["days_after_initiation"] == 7
    transition = lifecycle["dynamic"][0]["transition"]
    assert transition["for_each"] == '${each.key == "raw" ? var.raw_transitions : {}}'
    logging = storage.resources("aws_s3_bucket_logging")["this"]
    assert logging["for_each"] == "${local.data_buckets}"


def test_bucket_policies_deny_insecure_transport() -> None:
    document = module("storage").data("aws_iam_policy_document")["bucket"]
    deny = document["statement"][0]
    assert deny["effect"] == "Deny" and deny["actions"] == ["s3:*"]
    assert deny["condition"] == [{"test": "Bool", "variable": "aws:SecureTransport", "values": ["false"]}]
    bucket_arn = "${aws_s3_bucket.this[each.key].arn}"
    assert deny["resources"] == [bucket_arn, f"{bucket_arn}/*"]


# --- IAM ------------------------------------------------------------------------------------------

# The GitHub roles (modules/delivery): Terraform manages whole resources, so the deploy role has
# service-wide actions, but only on resources named from settings deploy.name (local.managed: all
# owned services but IAM); the plan role reads. The permissions boundary every other role carries
# allows the same service-wide actions on the same resources.
DELIVERY = "modules/delivery"
READ_ONLY = re.compile(r"\$\{statement\.key\}:(Describe|Get|List)\*")
SERVICE_WIDE = {(DELIVERY, "deploy"), (DELIVERY, "boundary")}


def _delivery_documents() -> dict[str, dict[str, Any]]:
    return module("delivery").data("aws_iam_policy_document")


def _managed_services() -> set[str]:
    """The services of the deploy role's and the boundary's "<service>:*" statements."""
    delivery = module("delivery")
    assert delivery.locals["managed"] == (
        '${{for service, arns in local.owned : service => arns if service != "iam"}}')
    for name in ("deploy", "boundary"):
        dynamic = _delivery_documents()[name]["dynamic"]
        assert [d["statement"]["for_each"] for d in dynamic] == ["${local.managed}"], name
    return set(delivery.locals["owned"]) - {"iam"}


def test_no_iam_wildcard_actions() -> None:
    documents = all_policy_documents()
    assert len(documents) >= 10
    assert "iam" not in _managed_services()
    for folder, name, document in documents:
        for statement in statements(document):
            if statement.get("effect", "Allow") == "Deny":
                continue  # a Deny only takes permissions away
            for action in statement["actions"]:
                if (folder, name) in SERVICE_WIDE and action == "${statement.key}:*":
                    assert statement["resources"] == "${statement.value}"  # the owned resources
                    continue
                if (folder, name) == (DELIVERY, "plan") and READ_ONLY.fullmatch(action):
                    assert statement["resources"] == "${statement.value}"  # the owned resources
                    continue
                assert "*" not in action, f"{folder} {name}: wildcard action {action}"


def test_deploy_role_manages_only_what_is_named_from_settings() -> None:
    owned = module("delivery").locals["owned"]
    for service, arns in owned.items():
        for arn in arns:
            assert "${local.name}" in arn or "${local.glue_name}" in arn or arn.endswith(":catalog"), arn
    trust = module("delivery").data("aws_iam_policy_document")["trust"]
    assert trust["for_each"]["deploy"] == ["${local.repo}:environment:${var.environment}"]
    conditions = {c["variable"]: c["values"] for c in trust["statement"][0]["condition"]}
    assert conditions["${local.issuer}:aud"] == ["sts.amazonaws.com"]


# What the deploy role may do on "*": account-wide reads, and the few registrations AWS grants on
# no narrower resource. No key management or security-group writes (those are tag-conditioned).
DEPLOY_ON_STAR = {
    "ecs:RegisterTaskDefinition", "ecs:DeregisterTaskDefinition", "ecr:GetAuthorizationToken",
    "lambda:CreateEventSourceMapping", "lambda:UpdateEventSourceMapping", "lambda:DeleteEventSourceMapping",
}
READ = re.compile(r"\w+:(Describe|Get|List)\w*")


def test_star_resources_only_where_aws_requires_them() -> None:
    key_policies = {(folder, ref(key["policy"]).split(".")[2])
                    for folder, mod in modules().items()
                    for key in mod.resources("aws_kms_key").values()}
    assert key_policies == {("modules/encryption", "key")}
    for folder, name, document in all_policy_documents():
        for statement in statements(document):
            if statement.get("effect", "Allow") == "Deny" or "*" not in statement.get("resources", []):
                continue
            if (folder, name) in key_policies:
                continue  # in a key policy "*" is the key itself
            if (folder, name) == (DELIVERY, "deploy"):
                if statement["sid"] == "CreateTheKeyTagged":
                    # A key has no ARN before it exists: created only carrying the project tag.
                    assert set(statement["actions"]) == {"kms:CreateKey", "kms:TagResource"}
                    [condition] = statement["condition"]
                    assert condition == {"test": "StringEquals", "variable": "aws:RequestTag/project",
                                         "values": ["${local.name}"]}
                    continue
                assert statement["sid"] == "CreateWhatHasNoNameYet"
                writes = {a for a in statement["actions"] if not READ.fullmatch(a)} - DEPLOY_ON_STAR
                assert not writes, f"deploy writes on Resource '*': {writes}"
                continue
            if (folder, name) == (DELIVERY, "plan"):
                assert statement["sid"] == "ReadWhatHasNoName"
                assert all(READ.fullmatch(a) for a in statement["actions"]), statement["actions"]
                continue
            # The boundary on "*": only what the runtime roles need and AWS grants on "*" alone.
            unscoped = set(statement["actions"]) - STAR_RESOURCE_ACTIONS
            assert not unscoped, f"{folder} {name}: {unscoped} on Resource '*'"
            if (folder, name) == (DELIVERY, "boundary"):
                continue  # a ceiling: each role's own policy scopes PutMetricData by namespace
            if "cloudwatch:PutMetricData" in statement["actions"]:
                assert statement["condition"][0]["variable"] == "cloudwatch:namespace"


def test_deploy_manages_keys_and_security_groups_only_by_the_project_tag() -> None:
    """Keys and security groups have no name to match: the provider's default_tags put project =
    settings deploy.name on them, and deploy's key and group writes require that tag."""
    for env in ("dev", "prod"):
        tags = modules()[f"envs/{env}"].blocks["provider"]["aws"]["default_tags"][0]["tags"]
        assert tags["project"] == "${local.settings.deploy.name}"
    delivery = module("delivery").locals
    assert delivery["keys"].endswith(":key/*")
    assert delivery["groups"].endswith(":security-group/*")
    assert delivery["group_rules"].endswith(":security-group-rule/*")
    tagged = [{"test": "StringEquals", "variable": "aws:ResourceTag/project", "values": ["${local.name}"]}]
    requested = [{"test": "StringEquals", "variable": "aws:RequestTag/project", "values": ["${local.name}"]}]
    # A new group or rule carries the tag in its request; only CreateTags of that request is
    # allowed on untagged ones; everything else on keys, groups and rules needs the tag already.
    creates = {
        "${local.groups}": {"ec2:CreateSecurityGroup"},
        "${local.group_rules}": {"ec2:AuthorizeSecurityGroupEgress", "ec2:AuthorizeSecurityGroupIngress"},
    }
    by_sid = {s.get("sid"): s for s in statements(_delivery_documents()["deploy"])}
    for sid, statement in by_sid.items():
        resources = statement.get("resources", [])
        if statement.get("effect", "Allow") == "Deny" or not isinstance(resources, list):
            continue
        touched = {"${local.keys}", "${local.groups}", "${local.group_rules}"} & set(resources)
        if not touched:
            continue
        condition = statement["condition"]
        if condition == requested:
            [resource] = resources
            assert set(statement["actions"]) <= creates[resource], sid
        elif condition[0]["variable"] == "ec2:CreateAction":
            assert statement["actions"] == ["ec2:CreateTags"], sid
        else:
            assert condition == tagged, sid
    assert by_sid["CreateSecurityGroupsTagged"]["condition"] == requested
    assert by_sid["CreateSecurityGroupRulesTagged"]["condition"] == requested
    assert by_sid["ManageThePipelinesKey"]["condition"] == tagged
    assert "kms:PutKeyPolicy" in by_sid["ManageThePipelinesKey"]["actions"]
    assert "ec2:RevokeSecurityGroupIngress" in by_sid["ManageThePipelinesSecurityGroupsAndRules"]["actions"]
    # The databases' groups, not the pipeline's: only their ingress rules, on those groups only.
    databases = by_sid["ChangeTheDatabaseGroupsIngressRules"]
    assert databases["resources"] == "${local.database_groups}"
    assert all("Ingress" in a or a == "ec2:ModifySecurityGroupRules" for a in databases["actions"])
    assert module("pipeline").modules["delivery"]["database_security_group_ids"] == [
        "${var.source_db_security_group_id}", "${var.warehouse_db_security_group_id}"]


def test_every_role_policy_is_a_policy_document() -> None:
    for folder, mod in modules().items():
        for name, policy in mod.resources("aws_iam_role_policy").items():
            assert re.fullmatch(r"\$\{data\.aws_iam_policy_document\.\w+\.json\}", policy["policy"]), \
                f"{folder} {name}"
        assert "aws_iam_role_policy_attachment" not in mod.blocks.get("resource", {}), \
            f"{folder}: managed policies are broader than the pipeline needs"


# --- capture service ------------------------------------------------------------------------------

def test_capture_runs_exactly_one_task_and_stops_the_old_one_first() -> None:
    service = module("capture").resources("aws_ecs_service")["capture"]
    assert service["desired_count"] == 1
    assert service["deployment_minimum_healthy_percent"] == 0
    assert service["deployment_maximum_percent"] == 100
    assert service["launch_type"] == "FARGATE"


def test_capture_task_has_health_check_logs_and_no_credentials_in_plain_text() -> None:
    capture = module("capture")
    task = capture.resources("aws_ecs_task_definition")["this"]
    assert task["for_each"] == "${local.tasks}"
    assert capture.locals["tasks"]["capture"] == "${local.capture_task}"
    service = capture.locals["capture_task"]
    assert service["container"]["healthCheck"]["command"] == ["CMD", "python", "/app/capture_health.py"]
    assert service["log_group"] == "${aws_cloudwatch_log_group.capture.name}"
    containers = task["container_definitions"]
    assert 'logDriver = "awslogs"' in containers
    assert "awslogs-group = each.value.log_group" in containers
    assert "readonlyRootFilesystem = true" in containers
    # snapshot progress must outlive the task: it is kept in the raw bucket, not on task storage
    assert {"name": "TOTES_CDC_STATE_STORE", "value": "s3"} in service["environment"]
    assert 'valueFrom = "${var.source_secret_arn}:${key}::"' in service["container"]["secrets"]
    assert "PGPASSWORD" in capture.locals["secret_keys"]
    assert "password" not in (containers + str(service["environment"])).lower()
    assert task["execution_role_arn"] == "${aws_iam_role.execution.arn}"
    assert service["task_role_arn"] == "${aws_iam_role.task.arn}"


def test_dockerfile_copies_what_exists_and_runs_capture_with_the_health_check() -> None:
    dockerfile = (INFRA / "docker" / "capture.Dockerfile").read_text(encoding="utf-8")
    root = SETTINGS_PATH.parent.parent
    copies = re.findall(r"^COPY (\S+) (\S+)$", dockerfile, re.M)
    assert copies
    for source, _ in copies:
        assert (root / source).exists(), source
    assert ("infra/docker/capture_health.py", "capture_health.py") in copies
    assert ("infra/docker/entrypoint.py", "entrypoint.py") in copies
    assert 'ENTRYPOINT ["python", "/app/entrypoint.py"]' in dockerfile
    assert 'CMD ["capture"]' in dockerfile
    assert "USER 10001" in dockerfile


def test_the_image_layout_finds_the_settings_and_every_command(tmp_path: Path) -> None:
    """Lay the source tree out as the Dockerfile's COPY lines do and run the entry point there."""
    dockerfile = (INFRA / "docker" / "capture.Dockerfile").read_text(encoding="utf-8")
    root = SETTINGS_PATH.parent.parent
    for source, target in re.findall(r"^COPY (\S+) (\S+)$", dockerfile, re.M):
        if source == "pyproject.toml":
            continue
        destination = tmp_path / target
        if (root / source).is_dir():
            shutil.copytree(root / source, destination, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / source, destination)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = "import totes_cdc.settings as s; print(s.SETTINGS_PATH); s.settings()"
    found = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60, check=True)
    assert found.stdout.strip() == str(tmp_path / "infra" / "settings.json")
    # every command a task definition gives the image (the service's is the Dockerfile's CMD)
    tasks = (INFRA / "modules" / "capture" / "tasks.tf").read_text(encoding="utf-8")
    commands = {"capture", *re.findall(r'command\s*=\s*\["([a-z][\w-]*)"', tasks)}
    assert commands == {"capture", "resync", "source-check"}
    for argv in ([], *([command] for command in sorted(commands))):
        subprocess.run([sys.executable, "entrypoint.py", *argv, "--help"], cwd=tmp_path, env=env,
                       capture_output=True, timeout=60, check=True)


# --- monitoring -----------------------------------------------------------------------------------

def test_every_alarm_notifies_the_topic() -> None:
    alarms = [(folder, name, body) for folder, mod in modules().items()
              for name, body in mod.resources("aws_cloudwatch_metric_alarm").items()]
    assert [(folder, name) for folder, name, _ in alarms] == [("modules/monitoring", "this")]
    for _, _, body in alarms:
        assert body["alarm_actions"] == ["${aws_sns_topic.alarms.arn}"]
        assert body["ok_actions"] == ["${aws_sns_topic.alarms.arn}"]
        assert body["for_each"] == "${local.alarms}"
    subscription = module("monitoring").resources("aws_sns_topic_subscription")["email"]
    assert subscription["protocol"] == "email"
    assert subscription["for_each"] == "${toset(var.alarm_emails)}"
    topic = module("monitoring").resources("aws_sns_topic")["alarms"]
    assert topic["kms_master_key_id"] == "${var.kms_key_arn}"


def test_alarms_cover_every_health_signal_with_settings_thresholds() -> None:
    mon = module("monitoring")
    assert mon.locals["limits"] == "${var.settings.alarms}"
    assert mon.locals["alarms"] == "${merge(local.function_alarms, local.stage_alarms)}"
    stage = mon.locals["stage_alarms"]
    metrics = {alarm["metric"] for alarm in stage.values()}
    assert metrics == {"SlotLagBytes", "CaptureHeartbeat", "GetRecords.IteratorAgeMilliseconds",
                       "EndToEndLatencyMs", "RecordsDeadLettered", "FilesDeadLettered",
                       "ApproximateNumberOfMessagesVisible", "OldestReplicationSlotLag",
                       "TransactionLogsDiskUsage", "FreeStorageSpace", "RunningTaskCount",
                       "ReconcileDifferences"}
    per_function = mon.locals["function_alarms"]
    for metric in ("Errors", "Throttles", "Duration"):
        assert f'metric = "{metric}"' in per_function
    # Every threshold in settings is used; each alarm's threshold is a setting (or the heartbeat's 1).
    for key in RAW_SETTINGS["alarms"]:
        assert f"local.limits.{key}" in mon.text, f"settings alarms.{key} is not used"
    for name, alarm in stage.items():
        assert str(alarm["threshold"]).startswith("${local.limits.") or name in (
            "capture-heartbeat-missing", "capture-not-running", "reconcile-differences")
    latency = stage["end-to-end-latency-p99"]
    assert latency["extended_statistic"] == "p99"
    queues = {alarm["dimensions"]["QueueName"] for alarm in stage.values()
              if alarm["metric"] == "ApproximateNumberOfMessagesVisible"}
    assert queues == {"${var.queue_names.processed_files_dlq}", "${var.queue_names.stream_failures}"}


def test_heartbeat_alarm_fires_when_heartbeats_stop() -> None:
    heartbeat = module("monitoring").locals["stage_alarms"]["capture-heartbeat-missing"]
    assert heartbeat["statistic"] == "Sum"
    assert heartbeat["comparison"] == "LessThanThreshold" and heartbeat["threshold"] == 1
    assert heartbeat["period"] == "${local.limits.heartbeat_missing_seconds}"
    assert heartbeat["missing"] == "breaching"
    alarm = module("monitoring").resources("aws_cloudwatch_metric_alarm")["this"]
    assert alarm["treat_missing_data"] == '${try(each.value.missing, "notBreaching")}'
    assert alarm["period"] == "${try(each.value.period, local.period)}"


def test_dashboard_shows_lag_latency_errors_and_dead_letters() -> None:
    body = module("monitoring").resources("aws_cloudwatch_dashboard")["pipeline"]["dashboard_body"]
    # The pipeline's own metrics by their series (checked against what the code emits in
    # test_alarm_series); AWS's metrics by name.
    for metric in ("SlotLagBytes", "MillisBehindSource", "EventsPublished", "PutRecordsBatchSize",
                   "PutRecordsRetries", "CaptureHeartbeat", "EventsProcessed", "RecordsDeadLettered",
                   "FilesLoaded", "FactRowsAppended", "FilesDeadLettered", "EndToEndLatencyMs"):
        assert f".{metric}" in body and "local.series." in body, metric
    for metric in ("GetRecords.IteratorAgeMilliseconds", "IncomingRecords", "Errors", "Throttles",
                   "Duration", "ApproximateNumberOfMessagesVisible", "OldestReplicationSlotLag",
                   "TransactionLogsDiskUsage", "FreeStorageSpace", "RunningTaskCount"):
        assert f'"{metric}"' in body, metric
    assert 'stat = "p50"' in body and 'stat = "p99"' in body


def test_loader_retry_budget_rides_out_a_one_hour_outage() -> None:
    """A failing load is received again after the visibility timeout, max_receive_count times,
    before SQS moves it to the DLQ; the function timeout is a sixth of the visibility timeout."""
    mapping = RAW_SETTINGS["loader_mapping"]
    assert mapping["visibility_timeout_seconds"] * mapping["max_receive_count"] >= 2 * 3600
    assert mapping["visibility_timeout_seconds"] // 6 >= 120  # cold start in the VPC, secret, load
    retention = module("queues").locals
    assert retention["dlq_retention_seconds"] > retention["retention_seconds"]
    queues = module("queues").resources("aws_sqs_queue")
    assert queues["processed_files_dlq"]["message_retention_seconds"] == "${local.dlq_retention_seconds}"
    assert queues["processed_files"]["message_retention_seconds"] == "${local.retention_seconds}"


def test_stream_processor_reads_the_stream_and_only_writes_objects() -> None:
    document = module("stream_processor").data("aws_iam_policy_document")["function"]
    actions = {a for statement in statements(document) for a in statement["actions"]}
    # Subscribing (enhanced fan-out) only through its own consumer, not on the stream.
    subscribe = [s for s in statements(document) if "kinesis:SubscribeToShard" in s["actions"]]
    assert [s["resources"] for s in subscribe] == [["${statement.value.arn}"]]
    assert not {"s3:GetObject", "s3:ListBucket"} & actions
    assert "s3:PutObject" in actions


def test_lambdas_emit_metrics_as_log_lines_without_put_metric_data() -> None:
    document = module("lambda_function").data("aws_iam_policy_document")["this"]
    assert "cloudwatch:PutMetricData" not in str(document)
    environment = module("lambda_function").resources("aws_lambda_function")["this"]["environment"][0]
    assert environment["variables"] == "${var.environment}"  # no POWERTOOLS_SERVICE_NAME to differ


def test_the_shared_key_is_usable_only_through_the_services_each_role_needs() -> None:
    for folder, name, document in all_policy_documents():
        if (folder, name) == ("modules/encryption", "key") or folder == DELIVERY:
            continue  # the key policy itself; the deploy role creates and administers the key
        for statement in statements(document):
            if any(action.startswith("kms:") for action in statement["actions"]):
                conditions = {c["variable"]: c for c in statement.get("condition", [])}
                assert "kms:ViaService" in conditions, f"{folder} {name} {statement.get('sid')}"


def test_every_trust_policy_names_the_source_account() -> None:
    trusts = [(folder, name, document) for folder, name, document in all_policy_documents()
              if any("sts:AssumeRole" in s["actions"] for s in statements(document))]
    assert len(trusts) >= 3
    for folder, name, document in trusts:
        for statement in statements(document):
            variables = [c["variable"] for c in statement.get("condition", [])]
            assert "aws:SourceAccount" in variables, f"{folder} {name}"


# --- the permissions boundary ---------------------------------------------------------------------

GITHUB_ROLES = (DELIVERY, "github")
BOUNDARY_ARN = "${module.delivery.boundary_arn}"


def _boundary_callers(folder: str) -> list[tuple[str, dict[str, Any]]]:
    """The module calls of the module in ``folder``, with the folder each is made in."""
    source = f"../{Path(folder).name}"
    return [(caller, body) for caller, mod in modules().items()
            for body in mod.modules.values() if body["source"] == source]


def test_every_role_but_the_github_roles_carries_the_boundary() -> None:
    delivery = module("delivery")
    policy = delivery.resources("aws_iam_policy")["boundary"]
    assert policy["policy"] == "${data.aws_iam_policy_document.boundary.json}"
    assert delivery.locals["boundary"].endswith(f":policy/{policy['name']}")
    assert policy["name"] == "${local.name}-pipeline-boundary"
    assert delivery.blocks["output"]["boundary_arn"]["value"] == "${aws_iam_policy.boundary.arn}"
    roles = [(folder, name, body) for folder, mod in modules().items()
             for name, body in mod.resources("aws_iam_role").items()]
    assert {(folder, name) for folder, name, _ in roles} >= {
        GITHUB_ROLES, ("modules/lambda_function", "this"), ("modules/capture", "execution"),
        ("modules/capture", "task"), ("modules/capture", "source_check"), ("modules/capture", "events")}
    for folder, name, body in roles:
        if (folder, name) == GITHUB_ROLES:
            assert "permissions_boundary" not in body  # made by the administrator, denied to deploy
            continue
        assert body["permissions_boundary"] == "${var.permissions_boundary}", f"{folder} {name}"
        # Every call of the module passes the boundary on, up to the pipeline, which has it from
        # delivery.
        pending, seen = [folder], set()
        while pending:
            callee = pending.pop()
            callers = _boundary_callers(callee)
            assert callers, f"{callee} is never instantiated"
            for caller, call in callers:
                value = call["permissions_boundary"]
                if value == "${var.permissions_boundary}":
                    if caller not in seen:
                        seen.add(caller)
                        pending.append(caller)
                else:
                    assert (caller, value) == ("modules/pipeline", BOUNDARY_ARN), f"{caller} -> {callee}"


def _runtime_documents() -> list[tuple[str, str, dict[str, Any]]]:
    """The policy document of every role but the GitHub roles, with the documents merged into it
    (source_policy_documents = var.policy_json: each caller's policy_json)."""
    found = []
    for folder, mod in modules().items():
        if folder == DELIVERY:
            continue
        documents = mod.data("aws_iam_policy_document")
        for policy in mod.resources("aws_iam_role_policy").values():
            name = ref(policy["policy"]).split(".")[2]
            found.append((folder, name, documents[name]))
            for source in documents[name].get("source_policy_documents", []):
                assert source == "${var.policy_json}", f"{folder} {name}: {source}"
                for caller, call in _boundary_callers(folder):
                    merged = ref(call["policy_json"]).split(".")[2]
                    found.append((caller, merged, modules()[caller].data("aws_iam_policy_document")[merged]))
    return found


def test_the_boundary_allows_every_action_of_every_runtime_role() -> None:
    """A boundary missing an action breaks the pipeline only in AWS: every action any runtime role's
    policy allows must match an action the boundary allows, and one a role has on "*" (AWS grants
    it on nothing narrower) an action the boundary allows on "*"."""
    allowed = {f"{service}:*" for service in _managed_services()}
    on_star = set()
    for statement in statements(_delivery_documents()["boundary"]):
        assert statement.get("effect", "Allow") == "Allow"
        actions = {a for a in statement["actions"] if a != "${statement.key}:*"}
        allowed |= actions
        if "*" in statement["resources"]:
            on_star |= actions
    assert not [a for a in allowed if a.startswith("iam:") and a != "iam:PassRole"], allowed
    documents = _runtime_documents()
    assert {(folder, name) for folder, name, _ in documents} == {
        ("modules/lambda_function", "this"), ("modules/stream_processor", "function"),
        ("modules/loader", "function"), ("modules/capture", "execution"), ("modules/capture", "task"),
        ("modules/capture", "source_check"), ("modules/capture", "events")}
    for folder, name, document in documents:
        for statement in statements(document):
            if statement.get("effect", "Allow") == "Deny":
                continue
            patterns = on_star if statement["resources"] == ["*"] else allowed
            for action in statement["actions"]:
                assert any(fnmatchcase(action, pattern) for pattern in patterns), \
                    f"{folder} {name}: {action} is outside the permissions boundary"


def test_the_boundary_uses_only_the_pipelines_key_and_passes_only_its_roles() -> None:
    by_sid = {s["sid"]: s for s in statements(_delivery_documents()["boundary"])}
    key = by_sid["UseThePipelinesKey"]
    assert key["resources"] == ["${local.keys}"]
    assert key["condition"] == [{"test": "StringEquals", "variable": "aws:ResourceTag/project",
                                 "values": ["${local.name}"]}]
    assert by_sid["PassOnlyThePipelinesRoles"] == {
        "sid": "PassOnlyThePipelinesRoles", "actions": ["iam:PassRole"], "resources": ["${local.roles}"]}
    assert module("delivery").locals["roles"].endswith(":role/${local.name}-*")


# Every IAM call that creates a role or changes what it may do (AWS evaluates
# iam:PermissionsBoundary on each).
ROLE_GRANTS = {"iam:CreateRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:AttachRolePolicy",
               "iam:DetachRolePolicy", "iam:PutRolePermissionsBoundary"}
# Role calls that grant nothing: a role's permissions come only from its policies.
ROLE_CHANGES = {"iam:DeleteRole", "iam:UpdateRole", "iam:UpdateRoleDescription", "iam:UpdateAssumeRolePolicy",
                "iam:TagRole", "iam:UntagRole", "iam:PassRole"}
ROLE_WRITES = ROLE_GRANTS | ROLE_CHANGES | {"iam:DeleteRolePermissionsBoundary"}


def _denies(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in statements(document) if s.get("effect") == "Deny"]


def _denied(document: dict[str, Any], action: str, resource: str) -> bool:
    return any(any(fnmatchcase(action, a) for a in s["actions"]) and resource in s.get("resources", [])
               for s in _denies(document))


def test_deploy_creates_and_changes_roles_only_under_the_boundary() -> None:
    deploy = _delivery_documents()["deploy"]
    boundary = [{"test": "StringEquals", "variable": "iam:PermissionsBoundary",
                 "values": ["${local.boundary}"]}]
    granting = []
    for statement in statements(deploy):
        if statement.get("effect", "Allow") == "Deny":
            continue
        iam = [a for a in statement["actions"] if a.startswith("iam:")]
        for action in iam:
            assert "*" not in action, action
            if action in ROLE_GRANTS:
                assert statement.get("condition") == boundary, f"{statement['sid']}: {action} unbounded"
                granting.append(action)
            elif not READ.fullmatch(action):
                assert action in ROLE_CHANGES or "OpenIDConnectProvider" in action, action
    assert set(granting) == ROLE_GRANTS


def test_deploy_cannot_change_the_github_roles_nor_the_boundary() -> None:
    delivery = module("delivery")
    deploy = _delivery_documents()["deploy"]
    github = delivery.resources("aws_iam_role")["github"]
    assert github["name"] == "${local.name}-github-${each.key}"
    assert delivery.locals["github"].endswith(":role/${local.name}-github-*")
    for action in ROLE_WRITES:
        assert _denied(deploy, action, "${local.github}"), f"deploy may {action} its own roles"
    assert _denied(deploy, "iam:DeleteRolePermissionsBoundary", "*")
    for action in ("iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion", "iam:DeletePolicyVersion",
                   "iam:DeletePolicy", "iam:TagPolicy", "iam:UntagPolicy"):
        assert _denied(deploy, action, "${local.boundary}"), f"deploy may {action} the boundary"
    # Plans (with either role) refresh the boundary.
    for name in ("deploy", "plan"):
        reads = [s for s in statements(_delivery_documents()[name]) if s.get("sid") == "ReadTheBoundary"]
        assert reads and reads[0]["resources"] == ["${local.boundary}"], name
        assert {"iam:GetPolicy", "iam:GetPolicyVersion", "iam:ListPolicyVersions"} <= set(reads[0]["actions"])


def test_deploy_never_reads_secret_values() -> None:
    deploy = _delivery_documents()["deploy"]
    assert _denied(deploy, "secretsmanager:GetSecretValue", "*")


# What a plan never reads: the data itself, which plan's Get* on the owned resources would allow.
DATA_READS = {"secretsmanager:GetSecretValue", "kinesis:GetRecords", "kinesis:GetShardIterator",
              "logs:GetLogEvents", "logs:FilterLogEvents", "s3:GetObject", "s3:GetObjectVersion"}


def test_plan_never_reads_the_data() -> None:
    plan = _delivery_documents()["plan"]
    denies = _denies(plan)
    assert len(denies) == 1
    deny = denies[0]
    assert DATA_READS <= set(deny["actions"])
    assert "resources" not in deny
    # Except the state and the Lambda zips it refreshes (HeadObject needs s3:GetObject).
    assert deny["not_resources"] == "${concat(local.state, [local.artifacts])}"
    delivery = module("delivery").locals
    assert delivery["artifacts"] == "${local.arn}:s3:::${var.artifacts_bucket}/lambda/*"
    # ... and the zips are in the artifacts bucket under lambda/, the bucket delivery is given.
    artifact = module("lambda_function").resources("aws_s3_object")["artifact"]
    assert artifact["bucket"] == "${var.artifacts_bucket}"
    assert artifact["key"].startswith("lambda/")
    pipeline = module("pipeline")
    for name in ("stream_processor", "loader"):
        assert pipeline.modules[name]["artifacts_bucket"] == "${module.storage.names.artifacts}"
        assert module(name).modules["function"]["artifacts_bucket"] == "${var.artifacts_bucket}"
    assert module("storage").locals["data_buckets"]["artifacts"] == (
        "${var.settings.deploy.buckets.artifacts}${var.name_suffix}")
    assert pipeline.modules["storage"]["name_suffix"] == "${local.bucket_suffix}"
    assert pipeline.modules["delivery"]["artifacts_bucket"] == (
        "${local.settings.deploy.buckets.artifacts}${local.bucket_suffix}")
