"""Local services and their lifecycle: the JVM jars, the Kafka broker, the embedded platform process."""
