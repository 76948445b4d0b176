"""Where a Kafka producer puts each key: reads {"partitions": N, "keys": [...]} on stdin and
prints the partition of each key as a JSON list, computed by kafka-python's DefaultPartitioner
(murmur2 of the key bytes, as the Java client), not by Provision."""
import json
import sys

from kafka.partitioner.default import DefaultPartitioner

request = json.load(sys.stdin)
partitions = list(range(request["partitions"]))
partitioner = DefaultPartitioner()
print(json.dumps([partitioner(key.encode("utf-8"), partitions, partitions) for key in request["keys"]]))
