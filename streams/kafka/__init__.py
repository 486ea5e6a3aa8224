"""Kafka: the clients the settings describe, the service's topics, and where a partition's log ends.

=====================  ==========================================================================
module                 holds
=====================  ==========================================================================
``clients``            aiokafka options and the librdkafka config (bootstrap, SASL, TLS)
``topics``             topic names, partitions and configs, their creation, one record read back
``watermarks``         where a partition's log ends, as a fetch response's high watermark reports it
                       (the one place that knows the embedded broker's ListOffsets answer)
=====================  ==========================================================================
"""
