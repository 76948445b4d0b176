// librdkafka (Debian's librdkafka-dev), and what Swift cannot call directly: its variadic
// produce call and the macros around it.
#include <librdkafka/rdkafka.h>

/// Enqueues one record for a partition of a topic handle, copying key and value; `headers`
/// pass to librdkafka on success (the caller destroys them on failure). A null value is a
/// tombstone.
static inline rd_kafka_resp_err_t provision_rdkafka_produce(rd_kafka_t *rk, rd_kafka_topic_t *topic, int32_t partition,
                                                            const void *key, size_t key_len,
                                                            const void *value, size_t value_len,
                                                            int64_t timestamp, rd_kafka_headers_t *headers,
                                                            void *opaque) {
    return rd_kafka_producev(rk, RD_KAFKA_V_RKT(topic), RD_KAFKA_V_PARTITION(partition),
                             RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, value_len),
                             RD_KAFKA_V_TIMESTAMP(timestamp), RD_KAFKA_V_HEADERS(headers),
                             RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_END);
}
