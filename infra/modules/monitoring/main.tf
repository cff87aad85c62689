# Dashboard and alarms. Thresholds come from settings alarms, which the local stack's health panel
# reads too; every alarm notifies the alarm topic (e-mail subscriptions) when it fires and clears.

locals {
  ns     = var.settings.metrics_namespace
  limits = var.settings.alarms
  period = local.limits.period_seconds
  region = data.aws_region.current.name
  stream = { StreamName = var.stream_name }
  # The pipeline's own metrics carry one dimension naming their emitter (settings metrics, which the
  # code reads too: totes_cdc.metric_names): an alarm or widget without it watches an empty series.
  emitters = var.settings.metrics.emitters
  dims     = { for emitter, e in local.emitters : emitter => { (var.settings.metrics.dimension) = e.service } }
  # Dashboard series of an own metric (series.<emitter>.<name>): namespace, name, dimension, value.
  series = { for emitter, e in local.emitters : emitter => {
    for name, unit in e.names : name => [local.ns, name, var.settings.metrics.dimension, e.service]
  } }
  check_period = var.settings.source_check.schedule_minutes * 60
  source_db    = { DBInstanceIdentifier = var.source_db_instance_id }
  capture_task = { ClusterName = var.capture_cluster_name, ServiceName = var.capture_service_name }

  function_alarms = merge([for role, fn in var.functions : {
    "${role}-errors" = {
      description = "${fn.name} invocations failed (see its log group)"
      namespace   = "AWS/Lambda", metric = "Errors", statistic = "Sum", dimensions = { FunctionName = fn.name }
      threshold   = local.limits.lambda_errors, comparison = "GreaterThanOrEqualToThreshold", periods = 1
    }
    "${role}-throttles" = {
      description = "${fn.name} invocations throttled (concurrency cap or account limit)"
      namespace   = "AWS/Lambda", metric = "Throttles", statistic = "Sum", dimensions = { FunctionName = fn.name }
      threshold   = local.limits.lambda_throttles, comparison = "GreaterThanOrEqualToThreshold", periods = 1
    }
    "${role}-duration-p99" = {
      description = "${fn.name} p99 duration near its timeout"
      namespace   = "AWS/Lambda", metric = "Duration", extended_statistic = "p99", dimensions = { FunctionName = fn.name }
      threshold   = 1000 * fn.timeout_seconds * local.limits.lambda_duration_p99_fraction_of_timeout
      comparison  = "GreaterThanThreshold", periods = local.limits.evaluation_periods
    }
  }]...)

  stage_alarms = {
    "slot-lag" = {
      description = "WAL retained by the replication slot is growing: capture is behind or stopped"
      namespace   = local.ns, metric = "SlotLagBytes", statistic = "Maximum", dimensions = local.dims.capture
      threshold   = local.limits.slot_lag_bytes, comparison = "GreaterThanThreshold", periods = local.limits.evaluation_periods
    }
    "capture-heartbeat-missing" = {
      description = "No capture heartbeat: the capture task is down or cannot reach the source"
      namespace   = local.ns, metric = "CaptureHeartbeat", statistic = "Sum", dimensions = local.dims.capture
      threshold   = 1, comparison = "LessThanThreshold", periods = 1
      period      = local.limits.heartbeat_missing_seconds, missing = "breaching"
    }
    "stream-iterator-age" = {
      description = "The stream processor is falling behind the stream"
      namespace   = "AWS/Kinesis", metric = "GetRecords.IteratorAgeMilliseconds", statistic = "Maximum", dimensions = local.stream
      threshold   = local.limits.iterator_age_ms, comparison = "GreaterThanThreshold", periods = local.limits.evaluation_periods
    }
    "end-to-end-latency-p99" = {
      description = "Source commit to warehouse row takes too long (p99)"
      namespace   = local.ns, metric = "EndToEndLatencyMs", extended_statistic = "p99", dimensions = local.dims.loader
      threshold   = local.limits.end_to_end_latency_p99_ms, comparison = "GreaterThanThreshold", periods = local.limits.evaluation_periods
    }
    "records-dead-lettered" = {
      description = "The stream processor dead-lettered records (dead-letter bucket, records prefix)"
      namespace   = local.ns, metric = "RecordsDeadLettered", statistic = "Sum", dimensions = local.dims.stream_processor
      threshold   = local.limits.dead_letter_objects, comparison = "GreaterThanOrEqualToThreshold", periods = 1
    }
    "files-dead-lettered" = {
      description = "The loader dead-lettered files (dead-letter bucket, files prefix)"
      namespace   = local.ns, metric = "FilesDeadLettered", statistic = "Sum", dimensions = local.dims.loader
      threshold   = local.limits.dead_letter_objects, comparison = "GreaterThanOrEqualToThreshold", periods = 1
    }
    "processed-files-dlq" = {
      description = "Processed-file notifications failed max_receive_count times and wait in the DLQ"
      namespace   = "AWS/SQS", metric = "ApproximateNumberOfMessagesVisible", statistic = "Maximum"
      dimensions  = { QueueName = var.queue_names.processed_files_dlq }
      threshold   = local.limits.dead_letter_objects, comparison = "GreaterThanOrEqualToThreshold", periods = 1
    }
    # The source is watched from RDS's own metrics too: they keep coming when capture is down.
    "source-slot-lag" = {
      description = "RDS: WAL retained by the oldest replication slot is growing (capture behind or stopped)"
      namespace   = "AWS/RDS", metric = "OldestReplicationSlotLag", statistic = "Maximum", dimensions = local.source_db
      threshold   = local.limits.slot_lag_bytes, comparison = "GreaterThanThreshold", periods = local.limits.evaluation_periods
    }
    "source-transaction-logs" = {
      description = "RDS: disk used by transaction logs (WAL) on the source is high"
      namespace   = "AWS/RDS", metric = "TransactionLogsDiskUsage", statistic = "Maximum", dimensions = local.source_db
      threshold   = local.limits.source_transaction_logs_bytes, comparison = "GreaterThanThreshold", periods = local.limits.evaluation_periods
    }
    "source-free-storage" = {
      description = "RDS: the source database is running out of storage"
      namespace   = "AWS/RDS", metric = "FreeStorageSpace", statistic = "Minimum", dimensions = local.source_db
      threshold   = local.limits.source_free_storage_bytes, comparison = "LessThanThreshold", periods = local.limits.evaluation_periods
    }
    # The scheduled source check (source_check module): missing data means it did not run.
    "source-check-slot-lag" = {
      description = "Scheduled source check: WAL retained by the capture slot is growing, or the check did not run"
      namespace   = local.ns, metric = "SlotLagBytes", statistic = "Maximum", dimensions = local.dims.source_check
      threshold   = local.limits.slot_lag_bytes, comparison = "GreaterThanThreshold", periods = 1
      period      = local.check_period, missing = "breaching"
    }
    # Rows in flight make a single run differ now and then; two runs in a row do not.
    "reconcile-differences" = {
      description = "Scheduled source check: the warehouse differs from the source in two runs in a row (totes-cdc reconcile says where)"
      namespace   = local.ns, metric = "ReconcileDifferences", statistic = "Minimum", dimensions = local.dims.source_check
      threshold   = 1, comparison = "GreaterThanOrEqualToThreshold", periods = 2, period = local.check_period
    }
    # Container Insights (enabled on the cluster) counts the service's running tasks.
    "capture-not-running" = {
      description = "The capture service has no running task"
      namespace   = "ECS/ContainerInsights", metric = "RunningTaskCount", statistic = "Minimum", dimensions = local.capture_task
      threshold   = 1, comparison = "LessThanThreshold", periods = local.limits.evaluation_periods, missing = "breaching"
    }
    "stream-failures" = {
      description = "Stream batches exhausted their retries; their positions wait in the on-failure queue"
      namespace   = "AWS/SQS", metric = "ApproximateNumberOfMessagesVisible", statistic = "Maximum"
      dimensions  = { QueueName = var.queue_names.stream_failures }
      threshold   = local.limits.dead_letter_objects, comparison = "GreaterThanOrEqualToThreshold", periods = 1
    }
  }

  alarms = merge(local.function_alarms, local.stage_alarms)
}

data "aws_region" "current" {}

resource "aws_sns_topic" "alarms" {
  name              = var.settings.alarm_topic
  kms_master_key_id = var.kms_key_arn
}

resource "aws_sns_topic_subscription" "email" {
  for_each  = toset(var.alarm_emails)
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

resource "aws_cloudwatch_metric_alarm" "this" {
  for_each            = local.alarms
  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = each.value.description
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  dimensions          = each.value.dimensions
  statistic           = try(each.value.statistic, null)
  extended_statistic  = try(each.value.extended_statistic, null)
  period              = try(each.value.period, local.period)
  evaluation_periods  = each.value.periods
  threshold           = each.value.threshold
  comparison_operator = each.value.comparison
  treat_missing_data  = try(each.value.missing, "notBreaching")
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_dashboard" "pipeline" {
  dashboard_name = var.name
  dashboard_body = jsonencode({
    widgets = [
      for index, widget in [
        { title = "Replication slot lag (bytes)", metrics = [local.series.capture.SlotLagBytes, local.series.source_check.SlotLagBytes, ["AWS/RDS", "OldestReplicationSlotLag", "DBInstanceIdentifier", var.source_db_instance_id]], stat = "Maximum" },
        { title = "Capture: behind source (ms)", metrics = [local.series.capture.MillisBehindSource], stat = "Maximum" },
        { title = "Capture: events published, heartbeats", metrics = [local.series.capture.EventsPublished, local.series.capture.CaptureHeartbeat], stat = "Sum" },
        { title = "Capture: PutRecords batch size and retries", metrics = [local.series.capture.PutRecordsBatchSize, local.series.capture.PutRecordsRetries], stat = "Sum" },
        # Per table in capture's log lines, status file and `totes-cdc status`; here all tables together.
        { title = "Capture: snapshot/resync rows remaining (estimate) and copied", metrics = [local.series.capture.SnapshotRowsRemaining, concat(local.series.capture.SnapshotRowsCopied, [{ stat = "Sum" }])], stat = "Maximum" },
        {
          title = "Source (RDS): transaction logs and free storage (bytes)", stat = "Maximum"
          metrics = [
            ["AWS/RDS", "TransactionLogsDiskUsage", "DBInstanceIdentifier", var.source_db_instance_id],
            ["AWS/RDS", "FreeStorageSpace", "DBInstanceIdentifier", var.source_db_instance_id, { stat = "Minimum" }],
          ]
        },
        { title = "Source check: reconcile differences", metrics = [local.series.source_check.ReconcileDifferences], stat = "Maximum" },
        { title = "Capture: running tasks", metrics = [["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", var.capture_cluster_name, "ServiceName", var.capture_service_name]], stat = "Minimum" },
        { title = "Stream: incoming records", metrics = [["AWS/Kinesis", "IncomingRecords", "StreamName", var.stream_name]], stat = "Sum" },
        { title = "Stream: iterator age (ms)", metrics = [["AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", "StreamName", var.stream_name]], stat = "Maximum" },
        { title = "Lambda errors", metrics = [for fn in var.functions : ["AWS/Lambda", "Errors", "FunctionName", fn.name]], stat = "Sum" },
        { title = "Lambda throttles", metrics = [for fn in var.functions : ["AWS/Lambda", "Throttles", "FunctionName", fn.name]], stat = "Sum" },
        { title = "Lambda duration p99 (ms)", metrics = [for fn in var.functions : ["AWS/Lambda", "Duration", "FunctionName", fn.name]], stat = "p99" },
        { title = "Events processed, files loaded, fact rows", metrics = [local.series.stream_processor.EventsProcessed, local.series.loader.FilesLoaded, local.series.loader.FactRowsAppended], stat = "Sum" },
        {
          title = "Dead letters", stat = "Maximum"
          metrics = [
            concat(local.series.stream_processor.RecordsDeadLettered, [{ stat = "Sum" }]),
            concat(local.series.loader.FilesDeadLettered, [{ stat = "Sum" }]),
            ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", var.queue_names.processed_files_dlq],
            ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", var.queue_names.stream_failures],
          ]
        },
        { title = "End-to-end latency (ms)", metrics = [concat(local.series.loader.EndToEndLatencyMs, [{ stat = "p50" }]), concat(local.series.loader.EndToEndLatencyMs, [{ stat = "p99" }])], stat = "p99" },
        ] : {
        type   = "metric"
        x      = (index % 2) * 12
        y      = floor(index / 2) * 6
        width  = 12
        height = 6
        properties = {
          title   = widget.title
          metrics = widget.metrics
          stat    = widget.stat
          period  = local.period
          region  = local.region
          view    = "timeSeries"
        }
      }
    ]
  })
}
