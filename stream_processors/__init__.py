"""The stream processor: Kinesis change events to the S3 raw zone (Avro) and processed zone (Parquet).

``handler`` is the Lambda function (``local_aws.kinesis_runner`` does locally what the Lambda event
source mapping does in AWS and calls the same handler); ``packaging`` builds the deployable Lambda artifacts.
"""
