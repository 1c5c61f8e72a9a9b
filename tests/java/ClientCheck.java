/*
 * End-to-end check of a Kafka-compatible broker with the official Java client.
 *
 * Why: Strata must work with the real kafka-clients 4.x, not just with our own Python encoder, so
 * this program produces N keyed records with the producer's defaults (idempotence on, acks=all)
 * plus a chosen compression codec, then reads them all back with assign() + seekToBeginning (no
 * consumer group) and checks every key, value, header and timestamp, per-partition order, and that
 * each consumed offset is the one the producer was acknowledged with.
 *
 * Broker APIs this exercises (versions as kafka-clients 4.4.0 picks them against Kafka 4.4.0):
 * ApiVersions v5, Metadata v13, CreateTopics v7 (only with --partitions), InitProducerId v5,
 * Produce v13 and Fetch v18 (both address topics by topic id), ListOffsets v11.
 *
 * Run with the source launcher (no compile step; precompiling saves only ~1 s per run):
 *   java -cp '<lib>/*' tests/java/ClientCheck.java --bootstrap 127.0.0.1:9092 --topic t \
 *        --messages 10000 --compression zstd [--partitions 6] [--timeout-ms 120000]
 *
 * Prints exactly one JSON line on stdout:
 *   {"produced":N,"consumed":N,"errors":[...],"ok":true,...}
 * Exit code 0 only if everything matched; 1 on a mismatch or failure; 2 on bad arguments.
 * Client logging (slf4j-simple, WARN by default) goes to stderr.
 */

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class ClientCheck {
    static final int MAX_ERRORS = 50;
    static final String SOURCE_HEADER_VALUE = "strata-client-check";
    /** Compressible filler so codecs get realistic work; ~100 bytes per value. */
    static final String FILLER = "the quick brown fox jumps over the lazy dog; "
            + "the quick brown fox jumps over the lazy dog.";

    final List<String> errors = new ArrayList<>();
    int errorCount = 0;

    String bootstrap;
    /** --client-config FILE: properties (security.protocol, sasl.*, ssl.*) for every client. */
    Properties clientConfig = new Properties();
    String topic;
    int messages = -1;
    String compression = "none";
    int partitions = 0;
    long timeoutMs = 120_000;

    // Per record index: what the producer was acknowledged with (-1 = not acknowledged).
    int[] ackPartition;
    long[] ackOffset;
    long baseTimestamp;

    int produced = 0;
    int consumed = 0;
    long produceMs = 0;
    long consumeMs = 0;
    int topicPartitions = 0;

    public static void main(String[] args) {
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        ClientCheck check = new ClientCheck();
        try {
            check.parseArgs(args);
        } catch (IllegalArgumentException e) {
            System.err.println("usage: ClientCheck --bootstrap HOST:PORT --topic T --messages N"
                    + " --compression none|gzip|snappy|lz4|zstd [--partitions P] [--timeout-ms MS] [--client-config FILE]");
            System.err.println("error: " + e.getMessage());
            System.exit(2);
        }
        int rc = check.run();
        System.out.flush();
        // Client threads (e.g. a stuck sender) must not keep the JVM alive.
        Runtime.getRuntime().halt(rc);
    }

    void parseArgs(String[] args) {
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException("missing value for " + a);
            }
            String v = args[++i];
            switch (a) {
                case "--bootstrap": bootstrap = v; break;
                case "--topic": topic = v; break;
                case "--messages": messages = Integer.parseInt(v); break;
                case "--compression": compression = v; break;
                case "--partitions": partitions = Integer.parseInt(v); break;
                case "--timeout-ms": timeoutMs = Long.parseLong(v); break;
                case "--client-config":
                    try (java.io.FileInputStream in = new java.io.FileInputStream(v)) {
                        clientConfig.load(in);
                    } catch (java.io.IOException e) {
                        throw new IllegalArgumentException("cannot read " + v + ": " + e);
                    }
                    break;
                default: throw new IllegalArgumentException("unknown argument " + a);
            }
        }
        if (bootstrap == null || topic == null || messages < 0) {
            throw new IllegalArgumentException("--bootstrap, --topic and --messages are required");
        }
        if (!Arrays.asList("none", "gzip", "snappy", "lz4", "zstd").contains(compression)) {
            throw new IllegalArgumentException("bad --compression " + compression);
        }
    }

    void error(String msg) {
        errorCount++;
        if (errors.size() < MAX_ERRORS) {
            errors.add(msg);
        }
    }

    static String describe(Throwable t) {
        StringBuilder sb = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (sb.length() > 0) sb.append(" <- ");
            sb.append(c.getClass().getName()).append(": ").append(c.getMessage());
            if (c.getCause() == c) break;
        }
        return sb.toString();
    }

    static String key(int i) {
        return "key-" + i;
    }

    static String value(int i) {
        return "value-" + i + "|" + FILLER;
    }

    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    int run() {
        long start = System.nanoTime();
        long deadline = start + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        ackPartition = new int[messages];
        ackOffset = new long[messages];
        Arrays.fill(ackPartition, -1);
        Arrays.fill(ackOffset, -1L);
        try {
            if (partitions > 0) {
                createTopic(deadline);
            }
            if (errorCount == 0) {
                produce(deadline);
            }
            if (errorCount == 0 || produced > 0) {
                consume(deadline);
            }
        } catch (Throwable t) {
            error("unexpected: " + describe(t));
        }
        long totalMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
        boolean ok = errorCount == 0 && produced == messages && consumed == messages;
        System.out.println(summary(ok, totalMs));
        return ok ? 0 : 1;
    }

    /**
     * Create the topic via AdminClient. Only CreateTopics (plus ApiVersions/Metadata): readiness is
     * awaited with the producer's Metadata in produce(), because admin.describeTopics() in 4.x
     * would also need DescribeCluster and DescribeTopicPartitions from the broker.
     */
    void createTopic(long deadline) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.putAll(clientConfig);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "client-check-admin");
        Admin admin = Admin.create(p);
        try {
            admin.createTopics(Collections.singleton(new NewTopic(topic, partitions, (short) 1)))
                    .all().get(remainingMs(deadline), TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof TopicExistsException) {
                error("topic " + topic + " already exists; the check needs a fresh topic");
            } else {
                error("createTopics failed: " + describe(e.getCause()));
            }
        } catch (java.util.concurrent.TimeoutException e) {
            error("createTopics did not complete before the timeout");
        } finally {
            // Bounded: a default close() waits for in-flight calls to hit their own 60 s timeout.
            admin.close(Duration.ofSeconds(5));
        }
    }

    /** Wait until Metadata shows the created topic with all its partitions led. */
    boolean awaitTopic(KafkaProducer<String, String> producer, long deadline) throws InterruptedException {
        String last = "";
        while (System.nanoTime() < deadline) {
            try {
                List<PartitionInfo> infos = producer.partitionsFor(topic);
                boolean leaders = infos.stream().allMatch(x -> x.leader() != null && !x.leader().isEmpty());
                if (infos.size() == partitions && leaders) {
                    return true;
                }
                last = "metadata shows " + infos.size() + " partitions, all led=" + leaders;
            } catch (Exception e) {
                last = "partitionsFor failed: " + describe(e);
            }
            Thread.sleep(100);
        }
        error("topic not ready before timeout: " + last);
        return false;
    }

    void produce(long deadline) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.putAll(clientConfig);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "client-check-producer");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, compression);
        // Everything else stays at the client's defaults: acks=all, enable.idempotence=true,
        // max.in.flight=5, linger.ms=5, batch.size=16384, retries=MAX.

        // Explicit, distinct, recent timestamps (a minute in the past so no broker-side
        // "timestamp in the future" rule can bite), whole seconds so they are easy to eyeball.
        baseTimestamp = (System.currentTimeMillis() / 1000) * 1000 - 60_000 - messages;
        AtomicInteger acked = new AtomicInteger();
        List<String> sendErrors = Collections.synchronizedList(new ArrayList<>());
        long t0 = System.nanoTime();
        KafkaProducer<String, String> producer = new KafkaProducer<>(p);
        try {
            if (partitions > 0 && !awaitTopic(producer, deadline)) {
                return;
            }
            for (int i = 0; i < messages; i++) {
                final int idx = i;
                RecordHeaders headers = new RecordHeaders();
                headers.add("index", utf8(Integer.toString(i)));
                headers.add("source", utf8(SOURCE_HEADER_VALUE));
                ProducerRecord<String, String> rec = new ProducerRecord<>(
                        topic, null, baseTimestamp + i, key(i), value(i), headers);
                producer.send(rec, (md, ex) -> {
                    if (ex != null) {
                        sendErrors.add("send " + idx + " failed: " + describe(ex));
                    } else {
                        ackPartition[idx] = md.partition();
                        ackOffset[idx] = md.offset();
                        if (md.timestamp() != baseTimestamp + idx) {
                            sendErrors.add("send " + idx + " acked with timestamp " + md.timestamp()
                                    + ", expected " + (baseTimestamp + idx));
                        }
                    }
                    acked.incrementAndGet();
                });
                if (System.nanoTime() > deadline) {
                    error("timeout while sending, at record " + i);
                    break;
                }
            }
            // No flush(): it can block for delivery.timeout.ms (2 min); linger.ms sends the last
            // batches anyway, and this wait honours the deadline.
            while (acked.get() < messages && System.nanoTime() < deadline) {
                Thread.sleep(10);
            }
        } finally {
            producer.close(Duration.ofSeconds(5));
        }
        produceMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
        for (String e : sendErrors) {
            error(e);
        }
        for (int i = 0; i < messages; i++) {
            if (ackPartition[i] >= 0) produced++;
        }
        if (acked.get() < messages) {
            error("only " + acked.get() + " of " + messages + " sends completed before timeout");
        }
        checkAckOrder();
    }

    /** Acknowledged offsets must be unique and, per partition, increase with the send order. */
    void checkAckOrder() {
        Map<Integer, Long> lastOffset = new HashMap<>();
        Map<Integer, Integer> lastIndex = new HashMap<>();
        for (int i = 0; i < messages; i++) {
            int part = ackPartition[i];
            if (part < 0) continue;
            Long prev = lastOffset.get(part);
            if (prev != null && ackOffset[i] <= prev) {
                error("acked offsets out of order in partition " + part + ": record " + i + " got offset "
                        + ackOffset[i] + " after record " + lastIndex.get(part) + " got " + prev);
            }
            lastOffset.put(part, ackOffset[i]);
            lastIndex.put(part, i);
        }
    }

    void consume(long deadline) throws Exception {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.putAll(clientConfig);
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, "client-check-consumer");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        // No group.id: consumer groups are not needed for assign() and offsets are not committed.
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        long t0 = System.nanoTime();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p)) {
            List<PartitionInfo> infos = null;
            while (System.nanoTime() < deadline) {
                infos = consumer.partitionsFor(topic, Duration.ofMillis(Math.min(5000, remainingMs(deadline))));
                if (infos != null && !infos.isEmpty()) break;
                Thread.sleep(100);
            }
            if (infos == null || infos.isEmpty()) {
                error("consumer found no partitions for topic " + topic);
                return;
            }
            topicPartitions = infos.size();
            if (partitions > 0 && infos.size() != partitions) {
                error("topic has " + infos.size() + " partitions, expected " + partitions);
            }
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo info : infos) {
                tps.add(new TopicPartition(topic, info.partition()));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);

            boolean[] seen = new boolean[messages];
            Map<Integer, Long> lastOffset = new HashMap<>();
            Map<Integer, Integer> lastIndex = new HashMap<>();
            int unexpected = 0;
            while (consumed < messages && System.nanoTime() < deadline) {
                ConsumerRecords<String, String> recs =
                        consumer.poll(Duration.ofMillis(Math.min(1000, remainingMs(deadline))));
                for (ConsumerRecord<String, String> r : recs) {
                    Integer idx = verify(r);
                    if (idx == null) {
                        unexpected++;
                        continue;
                    }
                    if (seen[idx]) {
                        error("record " + idx + " consumed twice (partition " + r.partition()
                                + " offset " + r.offset() + ")");
                        continue;
                    }
                    seen[idx] = true;
                    consumed++;
                    Long prevOff = lastOffset.get(r.partition());
                    Integer prevIdx = lastIndex.get(r.partition());
                    if (prevOff != null && (r.offset() <= prevOff || idx <= prevIdx)) {
                        error("out of order in partition " + r.partition() + ": record " + idx + " at offset "
                                + r.offset() + " after record " + prevIdx + " at offset " + prevOff);
                    }
                    lastOffset.put(r.partition(), r.offset());
                    lastIndex.put(r.partition(), idx);
                }
            }
            if (unexpected > 0) {
                error(unexpected + " unexpected records (not produced by this run)");
            }
            if (consumed < messages) {
                int missing = 0;
                StringBuilder first = new StringBuilder();
                for (int i = 0; i < messages; i++) {
                    if (!seen[i]) {
                        if (missing < 10) first.append(missing == 0 ? "" : ",").append(i);
                        missing++;
                    }
                }
                error("consumed " + consumed + " of " + messages + " before timeout; " + missing
                        + " missing, first: [" + first + "]; positions: " + positions(consumer, tps));
            }
            checkEndOffsets(consumer, tps);
        }
        consumeMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
    }

    /** Check one record against what was sent; returns its index, or null if it is not ours. */
    Integer verify(ConsumerRecord<String, String> r) {
        String k = r.key();
        int idx;
        try {
            if (k == null || !k.startsWith("key-")) throw new NumberFormatException();
            idx = Integer.parseInt(k.substring(4));
            if (idx < 0 || idx >= messages) throw new NumberFormatException();
        } catch (NumberFormatException e) {
            error("unexpected key " + k + " at partition " + r.partition() + " offset " + r.offset());
            return null;
        }
        String where = "record " + idx + " (partition " + r.partition() + " offset " + r.offset() + "): ";
        if (!value(idx).equals(r.value())) {
            error(where + "value " + abbreviate(r.value()) + " != " + abbreviate(value(idx)));
        }
        if (r.timestamp() != baseTimestamp + idx) {
            error(where + "timestamp " + r.timestamp() + " != " + (baseTimestamp + idx));
        }
        if (r.timestampType() != TimestampType.CREATE_TIME) {
            error(where + "timestamp type " + r.timestampType() + " != CreateTime");
        }
        Header[] hs = r.headers().toArray();
        if (hs.length != 2
                || !"index".equals(hs[0].key()) || !Arrays.equals(hs[0].value(), utf8(Integer.toString(idx)))
                || !"source".equals(hs[1].key()) || !Arrays.equals(hs[1].value(), utf8(SOURCE_HEADER_VALUE))) {
            error(where + "headers " + headersToString(hs) + " != [index=" + idx + ", source="
                    + SOURCE_HEADER_VALUE + "]");
        }
        if (ackPartition[idx] < 0) {
            error(where + "was consumed but its send was never acknowledged");
        } else if (ackPartition[idx] != r.partition() || ackOffset[idx] != r.offset()) {
            error(where + "acknowledged at partition " + ackPartition[idx] + " offset " + ackOffset[idx]);
        }
        return idx;
    }

    /** The log end of each partition must be right after the last acknowledged record. */
    void checkEndOffsets(KafkaConsumer<String, String> consumer, List<TopicPartition> tps) {
        Map<Integer, Long> expectedEnd = new TreeMap<>();
        for (int i = 0; i < messages; i++) {
            if (ackPartition[i] >= 0) {
                expectedEnd.merge(ackPartition[i], ackOffset[i] + 1, Math::max);
            }
        }
        Map<TopicPartition, Long> ends;
        try {
            ends = consumer.endOffsets(tps, Duration.ofSeconds(10));
        } catch (Exception e) {
            error("endOffsets failed: " + describe(e));
            return;
        }
        for (TopicPartition tp : tps) {
            long want = expectedEnd.getOrDefault(tp.partition(), 0L);
            Long got = ends.get(tp);
            if (got == null || got != want) {
                error("partition " + tp.partition() + " end offset " + got + " != " + want
                        + " (one past its last acknowledged record)");
            }
        }
    }

    static String positions(KafkaConsumer<String, String> consumer, List<TopicPartition> tps) {
        Map<Integer, Long> pos = new TreeMap<>();
        for (TopicPartition tp : tps) {
            try {
                pos.put(tp.partition(), consumer.position(tp, Duration.ofSeconds(2)));
            } catch (Exception e) {
                pos.put(tp.partition(), -1L);
            }
        }
        return pos.toString();
    }

    /** The kafka-clients version on the classpath (AppInfoParser moved between 3.x and 4.x). */
    static String clientVersion() {
        try (java.io.InputStream in = KafkaProducer.class.getResourceAsStream("/kafka/kafka-version.properties")) {
            Properties p = new Properties();
            if (in != null) p.load(in);
            return p.getProperty("version", "unknown");
        } catch (java.io.IOException e) {
            return "unknown";
        }
    }

    static String headersToString(Header[] hs) {
        StringBuilder sb = new StringBuilder("[");
        for (int i = 0; i < hs.length; i++) {
            if (i > 0) sb.append(", ");
            String v = hs[i].value() == null ? "null" : new String(hs[i].value(), StandardCharsets.UTF_8);
            sb.append(hs[i].key()).append('=').append(v);
        }
        return sb.append(']').toString();
    }

    static String abbreviate(String s) {
        if (s == null) return "null";
        return s.length() <= 40 ? s : s.substring(0, 40) + "...";
    }

    static long remainingMs(long deadline) {
        return Math.max(1, TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime()));
    }

    String summary(boolean ok, long totalMs) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("produced", produced);
        m.put("consumed", consumed);
        m.put("errors", errors);
        m.put("error_count", errorCount);
        m.put("ok", ok);
        m.put("messages", messages);
        m.put("topic", topic);
        m.put("partitions", topicPartitions);
        m.put("compression", compression);
        m.put("client_version", clientVersion());
        m.put("produce_ms", produceMs);
        m.put("consume_ms", consumeMs);
        m.put("total_ms", totalMs);
        return toJson(m);
    }

    static String toJson(Object o) {
        if (o == null) return "null";
        if (o instanceof Boolean || o instanceof Number) return o.toString();
        if (o instanceof Map) {
            StringBuilder sb = new StringBuilder("{");
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) {
                if (!first) sb.append(',');
                first = false;
                sb.append(toJson(e.getKey().toString())).append(':').append(toJson(e.getValue()));
            }
            return sb.append('}').toString();
        }
        if (o instanceof List) {
            StringBuilder sb = new StringBuilder("[");
            boolean first = true;
            for (Object x : (List<?>) o) {
                if (!first) sb.append(',');
                first = false;
                sb.append(toJson(x));
            }
            return sb.append(']').toString();
        }
        String s = o.toString();
        StringBuilder sb = new StringBuilder("\"");
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                default:
                    if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
                    else sb.append(c);
            }
        }
        return sb.append('"').toString();
    }
}
