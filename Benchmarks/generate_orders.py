#!/usr/bin/env python3
"""Writes N order events (~200 bytes of JSON each) as JSON Lines, deterministically."""
import json
import random
import sys
from datetime import datetime, timedelta, timezone

count = int(sys.argv[1])
path = sys.argv[2]
rng = random.Random(42)
end = datetime.now(timezone.utc).replace(microsecond=0)
start = end - timedelta(days=180)
step = (end - start) / count
regions = ["EU", "US", "APAC", "LATAM"]
statuses = ["placed", "shipped", "delivered", "cancelled"]
with open(path, "w") as out:
    for index in range(count):
        placed = start + step * index
        cents = rng.randrange(500, 30000) if rng.random() < 0.85 else rng.randrange(30000, 500000)
        order = {
            "order_id": f"o-{index}",
            "customer_id": f"c-{rng.randrange(100000)}",
            "amount": round(cents / 100, 2),
            "currency": "EUR",
            "region": rng.choice(regions),
            "status": rng.choice(statuses),
            "items": rng.randrange(1, 7),
            "channel": rng.choice(["web", "mobile", "store"]),
            "placed_at": placed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{placed.microsecond // 1000:03d}Z",
        }
        out.write(json.dumps(order, separators=(",", ":")) + "\n")
