# The change stream. Capture aggregates events per shard (KPL format), so records/s stay far below
# shard limits; on-demand mode lets AWS add shards instead.

resource "aws_kinesis_stream" "changes" {
  name             = var.settings.stream.name
  shard_count      = var.on_demand ? null : var.settings.stream.shard_count
  retention_period = var.settings.stream.retention_hours
  encryption_type  = "KMS"
  kms_key_id       = var.kms_key_arn

  stream_mode_details {
    stream_mode = var.on_demand ? "ON_DEMAND" : "PROVISIONED"
  }

  shard_level_metrics = ["IncomingRecords", "IteratorAgeMilliseconds"]
}
