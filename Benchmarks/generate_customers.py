#!/usr/bin/env python3
"""Writes the customers the generated orders reference (c-0 .. c-(N-1)), each created before
or during the orders' period and updated about twice more, as JSON Lines in time order."""
import json
import random
import sys
from datetime import datetime, timedelta, timezone

count = int(sys.argv[1])
path = sys.argv[2]
rng = random.Random(7)
end = datetime.now(timezone.utc).replace(microsecond=0)
start = end - timedelta(days=180)
span = (end - start).total_seconds()
tiers = ["gold", "silver", "bronze"]
versions = []
for index in range(count):
    # Most exist before the first order; the rest appear during the period.
    created = start - timedelta(days=30) + timedelta(seconds=rng.random() * span * 0.5)
    for version in range(3):
        when = created + timedelta(seconds=version * rng.random() * span * 0.5)
        versions.append((when, index, version))
versions.sort()
with open(path, "w") as out:
    for when, index, version in versions:
        customer = {
            "customer_id": f"c-{index}",
            "name": f"Customer {index} v{version}",
            "tier": tiers[(index + version) % 3],
            "country": ["DE", "FR", "NL", "ES"][index % 4],
            "updated_at": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
        }
        out.write(json.dumps(customer, separators=(",", ":")) + "\n")
