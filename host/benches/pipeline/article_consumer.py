# The article's stream processor (consumer.py in
# ../shared/seed/kafka-python-realtime-article.txt), as written, for bench
# section 9. Changes, each marked `# bench:`:
#   - the topic, brokers and group come from the command line, and the group
#     starts from the earliest offset, to read the pre-loaded topic;
#   - start_processing stops after N records and prints the rate;
#   - logging goes to a file (it logs every record at INFO, as written).
# Run by `cargo xtask bench` in a virtualenv of its own, with the article's
# `pip install kafka-python pandas numpy`.
import json
import sys
import time  # bench:
import pandas as pd
from kafka import KafkaConsumer
from collections import deque, defaultdict
import logging
from datetime import datetime, timedelta

logging.basicConfig(level=logging.INFO, filename=sys.argv[5])  # bench: a file
logger = logging.getLogger(__name__)


class StreamProcessor:
    def __init__(self, bootstrap_servers=['localhost:9092']):
        self.consumer = KafkaConsumer(
            sys.argv[2],  # bench: the bench's topic
            bootstrap_servers=bootstrap_servers,
            value_deserializer=lambda m: json.loads(m.decode('utf-8')),
            key_deserializer=lambda k: k.decode('utf-8') if k else None,
            group_id=sys.argv[3],  # bench: a group per run
            auto_offset_reset='earliest',  # bench: read the pre-loaded topic
            enable_auto_commit=True
        )

        # Sliding window for real-time analytics
        self.window_size = timedelta(minutes=5)
        self.sensor_windows = defaultdict(lambda: deque())

    def process_message(self, message):
        """Process individual sensor message"""
        sensor_data = message.value
        sensor_id = sensor_data['sensor_id']
        timestamp = datetime.fromisoformat(sensor_data['timestamp'])

        # Add to sliding window
        self.sensor_windows[sensor_id].append((timestamp, sensor_data))

        # Remove old data outside window
        cutoff_time = datetime.utcnow() - self.window_size
        while (self.sensor_windows[sensor_id] and
               self.sensor_windows[sensor_id][0][0] < cutoff_time):
            self.sensor_windows[sensor_id].popleft()

        # Perform real-time analytics
        self.analyze_sensor_data(sensor_id)

        # Check for anomalies
        anomaly = self.detect_anomaly(sensor_data)
        if anomaly:
            self.handle_anomaly(sensor_data, anomaly)

    def analyze_sensor_data(self, sensor_id):
        """Perform windowed analytics on sensor data"""
        if not self.sensor_windows[sensor_id]:
            return

        # Extract data from window
        window_data = [data for _, data in self.sensor_windows[sensor_id]]
        df = pd.DataFrame(window_data)

        # Calculate statistics
        stats = {
            'sensor_id': sensor_id,
            'window_start': self.sensor_windows[sensor_id][0][0].isoformat(),
            'window_end': self.sensor_windows[sensor_id][-1][0].isoformat(),
            'count': len(window_data),
            'avg_temperature': df['temperature'].mean(),
            'avg_humidity': df['humidity'].mean(),
            'avg_pressure': df['pressure'].mean(),
            'min_battery': df['battery_level'].min(),
            'temperature_trend': self.calculate_trend(df['temperature'])
        }

        logger.info(f"Analytics for {sensor_id}: {stats}")

    def calculate_trend(self, series):
        """Calculate simple trend direction"""
        if len(series) < 2:
            return 'stable'

        recent_avg = series.tail(3).mean()
        older_avg = series.head(3).mean()

        if recent_avg > older_avg * 1.02:
            return 'increasing'
        elif recent_avg < older_avg * 0.98:
            return 'decreasing'
        else:
            return 'stable'

    def detect_anomaly(self, sensor_data):
        """Simple anomaly detection"""
        anomalies = []

        # Temperature anomaly
        if sensor_data['temperature'] > 40 or sensor_data['temperature'] < 0:
            anomalies.append('temperature_out_of_range')

        # Low battery alert
        if sensor_data['battery_level'] < 0.2:
            anomalies.append('low_battery')

        # Humidity anomaly
        if sensor_data['humidity'] > 90:
            anomalies.append('high_humidity')

        return anomalies if anomalies else None

    def handle_anomaly(self, sensor_data, anomalies):
        """Handle detected anomalies"""
        alert = {
            'timestamp': datetime.utcnow().isoformat(),
            'sensor_id': sensor_data['sensor_id'],
            'anomalies': anomalies,
            'sensor_data': sensor_data,
            'severity': 'high' if 'temperature_out_of_range' in anomalies else 'medium'
        }

        logger.warning(f"ANOMALY DETECTED: {alert}")

    def start_processing(self):
        """Start consuming and processing messages"""
        logger.info("Starting stream processor...")
        limit = int(sys.argv[4])  # bench: stop after N records
        done, started = 0, None  # bench:
        try:
            for message in self.consumer:
                if started is None:  # bench: timed from the first record
                    started = time.perf_counter()
                self.process_message(message)
                done += 1  # bench:
                if done == limit:  # bench:
                    break

        except KeyboardInterrupt:
            logger.info("Stopping stream processor...")
        finally:
            self.consumer.close()
        # bench: the rate, for the Rust side
        print(json.dumps({"records": done, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    processor = StreamProcessor(bootstrap_servers=[sys.argv[1]])  # bench: the broker
    processor.start_processing()
