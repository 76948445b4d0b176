/* Three Kafka brokers on 127.0.0.1 from librdkafka's own mock cluster (rdkafka_mock.h, in
 * Debian's librdkafka-dev), for the tests. Prints the bootstrap servers, then serves until
 * killed. The mock cluster cannot create topics through the Admin API: each TOPIC:PARTITIONS
 * argument is created up front. */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char error[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", error, sizeof(error));
    rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof(error));
    if (!host) {
        fprintf(stderr, "mock cluster: %s\n", error);
        return 1;
    }
    rd_kafka_mock_cluster_t *cluster = rd_kafka_mock_cluster_new(host, 3);
    if (!cluster) {
        fprintf(stderr, "mock cluster: could not start\n");
        return 1;
    }
    for (int index = 1; index < argc; index++) {
        char *colon = strrchr(argv[index], ':');
        if (!colon) continue;
        *colon = '\0';
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(cluster, argv[index], atoi(colon + 1), 3);
        if (err) fprintf(stderr, "mock cluster: topic %s: %s\n", argv[index], rd_kafka_err2str(err));
    }
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(cluster));
    fflush(stdout);
    for (;;) pause();
}
