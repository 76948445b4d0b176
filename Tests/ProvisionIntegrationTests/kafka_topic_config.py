"""A topic's settings as the broker reports them: prints {"name": "value", ...} for the topic
named on the command line (bootstrap servers first), read with kafka-python's admin client
(DescribeConfigs), not by Provision."""
import json
import sys

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

admin = KafkaAdminClient(bootstrap_servers=sys.argv[1])
responses = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, sys.argv[2])])
settings = {}
for response in responses:
    for resource in response.resources:
        error_code, _, _, _, entries = resource[:5]
        if error_code != 0:
            sys.exit(f"DescribeConfigs: error {error_code}")
        for entry in entries:
            settings[entry[0]] = entry[1]
print(json.dumps(settings))
