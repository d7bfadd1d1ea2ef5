"""All I/O: MQTT, Kafka, files and HTTP. The only package that opens sockets."""
