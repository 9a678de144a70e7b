"""Writes readings.jsonl: the sample `streamhost run-local` and `streamhost new`
projects use. Five sensors, one reading each every 10 s for 10 minutes, with
one event for each example rule and two lines that cannot be decoded.

    python3 generate.py
"""
import datetime
import json
import random

random.seed(7)
t0 = datetime.datetime(2026, 11, 26, 6, 0, 0, tzinfo=datetime.timezone.utc)
lines = []
sensors = [f"sensor_{i:03d}" for i in range(1, 6)]
for step in range(60):
    for j, s in enumerate(sensors):
        t = t0 + datetime.timedelta(seconds=10 * step, milliseconds=j)
        r = {
            "sensor_id": s,
            "timestamp": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "temperature": round(random.uniform(18, 26), 2),
            "humidity": round(random.uniform(40, 70), 2),
            "pressure": round(random.uniform(1005, 1015), 2),
            "battery_level": round(random.uniform(0.5, 1.0), 2),
            "location": {"building": "A", "floor": 1 + j % 3, "room": f"R{100 + j}"},
        }
        if s == "sensor_002" and step == 20:
            r["temperature"] = 45.5  # out of range, and a jump from the window mean
        if s == "sensor_003" and step >= 25:
            r["humidity"] = round(random.uniform(93, 97), 2)  # humid, then a humid window
        if s == "sensor_004" and step == 30:
            r["pressure"] = 990.0  # a pressure swing
        if s == "sensor_005" and step >= 50:
            r["battery_level"] = 0.12  # low battery
        lines.append(json.dumps(r, separators=(",", ":")))
    if step == 25:
        lines.append('{"sensor_id":"sensor_001","timestamp":"not a time","temperature":20}')
    if step == 35:
        lines.append("this line is not JSON")
with open("readings.jsonl", "w") as f:
    f.write("\n".join(lines) + "\n")
