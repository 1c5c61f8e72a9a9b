/*
 * A Kafka Streams keyed count with processing.guarantee=exactly_once_v2, for Strata's EOS tests.
 *
 * Why: Kafka Streams is the most demanding user of transactions (one producer per stream thread,
 * offsets committed through sendOffsetsToTransaction with the group's metadata, a changelog
 * restored after a crash); counts that stay exact while the broker is killed mid-run show that
 * the whole protocol holds. The topology: INPUT (String keys) -> groupByKey -> count (RocksDB
 * store, changelog topic) -> toStream -> OUTPUT (String key, Long count). With --regroup N the
 * count is by a new key instead (input key kI -> gJ, J = I mod N): Streams then writes the
 * records to a repartition topic first, which it purges with DeleteRecords once committed.
 *
 *   java -cp '<streams lib>/*' tests/java/StreamsEosCheck.java --bootstrap H:P \
 *        --application-id APP --input IN --output OUT --state-dir DIR [--threads 1] \
 *        [--guarantee exactly_once_v2]  (at_least_once: to compare) \
 *        [--cache-max-bytes N] [--commit-interval-ms MS] [--regroup N] [--purge-interval-ms MS]
 *
 * Runs until SIGTERM (the test stops it once the group's committed offsets reach the input's
 * end), printing "state <STATE>" on every state change. The test reads the counts back itself.
 */

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KGroupedStream;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Produced;

public class StreamsEosCheck {
    public static void main(String[] args) throws Exception {
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        Map<String, String> opts = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            opts.put(args[i].replaceFirst("^--", ""), args[i + 1]);
        }
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, opts.get("application-id"));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, opts.get("bootstrap"));
        p.put(StreamsConfig.STATE_DIR_CONFIG, opts.get("state-dir"));
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
                opts.getOrDefault("guarantee", StreamsConfig.EXACTLY_ONCE_V2));
        if (opts.containsKey("cache-max-bytes")) { // 0: every count update reaches the output
            p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, opts.get("cache-max-bytes"));
        }
        if (opts.containsKey("commit-interval-ms")) { // exactly_once_v2's default is 100
            p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, opts.get("commit-interval-ms"));
        }
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, opts.getOrDefault("threads", "1"));
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, "1");
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class.getName());
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class.getName());
        // A killed broker comes back within seconds; fail over quickly rather than by defaults
        // sized for production (a 45 s session, 5 min task timeout stay as they are).
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), "10000");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), "1000");
        p.put(StreamsConfig.producerPrefix(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG), "20000");

        if (opts.containsKey("purge-interval-ms")) { // how often repartition topics are purged
            p.put(StreamsConfig.REPARTITION_PURGE_INTERVAL_MS_CONFIG, opts.get("purge-interval-ms"));
        }

        StreamsBuilder b = new StreamsBuilder();
        KStream<String, String> in =
                b.stream(opts.get("input"), Consumed.with(Serdes.String(), Serdes.String()));
        KGroupedStream<String, String> grouped;
        if (opts.containsKey("regroup")) {
            int groups = Integer.parseInt(opts.get("regroup"));
            grouped = in.groupBy(
                    (k, v) -> "g" + (Integer.parseInt(k.substring(1)) % groups),
                    Grouped.with("regroup", Serdes.String(), Serdes.String()));
        } else {
            grouped = in.groupByKey();
        }
        grouped.count()
                .toStream()
                .to(opts.get("output"), Produced.with(Serdes.String(), Serdes.Long()));

        KafkaStreams streams = new KafkaStreams(b.build(), p);
        streams.setStateListener((now, before) -> {
            System.out.println("state " + now);
            System.out.flush();
        });
        // A thread that died on an error the broker's crash caused is replaced, as an
        // operator would configure it; the transactions keep the counts exact regardless.
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("stream thread failed, replacing it: " + e);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.REPLACE_THREAD;
        });
        // SIGTERM: close cleanly, report, and exit 0 (not the JVM's 143 for a signal).
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            boolean closed = streams.close(Duration.ofSeconds(20));
            System.out.println("{\"ok\":" + closed + ",\"closed\":" + closed + "}");
            System.out.flush();
            Runtime.getRuntime().halt(closed ? 0 : 1);
        }));
        streams.start();
        new CountDownLatch(1).await();
    }
}
