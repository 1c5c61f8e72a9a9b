/*
 * Kafka transactions (KIP-98 / KIP-447) through a broker with the official Java client 4.x.
 *
 * Why: transactional producers, read_committed consumers and consume-transform-produce loops
 * built on sendOffsetsToTransaction are how Java applications get exactly-once; they must work
 * against Strata unchanged. Two modes, each run with the source launcher:
 *
 *   java -cp '<lib>/*' tests/java/TxnCheck.java --mode basic --bootstrap H:P --prefix P \
 *        [--transactions 12] [--per-partition 5] [--timeout-ms 120000]
 *     Creates 3 topics x 4 partitions. One transactional producer runs --transactions
 *     transactions, each writing --per-partition records to every one of the 12 partitions;
 *     every third transaction is aborted, the others committed. A last transaction is left open
 *     while the consumers read. A read_committed consumer (assign + seekToBeginning) must see
 *     exactly the committed records, per partition in send order, and nothing else; its end
 *     offsets (the LSO) must stop at the open transaction's first offset. A read_uncommitted
 *     consumer must see every record sent, committed, aborted and open alike, in order. Then
 *     the open transaction is committed and read_committed must see it too.
 *
 *   java -cp '<lib>/*' tests/java/TxnCheck.java --mode ctp --bootstrap H:P --input IN \
 *        --output OUT --group G --transactional-id TID [--batch 100] [--pause-ms 20]
 *     Consume-transform-produce: a group consumer (read_committed, no auto commit) reads IN; for
 *     each poll a transaction sends one output record per input record (key kept, value
 *     "<value>|<partition>:<offset>") and sendOffsetsToTransaction(offsets, groupMetadata()),
 *     then commits. Recovers the way the Kafka docs prescribe: an abortable error aborts and
 *     rewinds the consumer to its committed offsets; a fatal one (fenced, epoch) recreates the
 *     producer. Prints one progress line per commit ("committed <total>") and stops once the
 *     group's committed offsets reach IN's end offsets as read at start. The test kills the
 *     broker or this process mid-stream and checks the output.
 *
 * Prints exactly one JSON line last on stdout: {"ok":true,...}. Exit code 0 only if ok.
 */

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.AuthorizationException;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.OutOfOrderSequenceException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class TxnCheck {
    final Map<String, String> opts = new HashMap<>();
    final List<String> errors = new ArrayList<>();
    final Map<String, Object> result = new LinkedHashMap<>();

    public static void main(String[] args) {
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        TxnCheck check = new TxnCheck();
        for (int i = 0; i + 1 < args.length; i += 2) {
            check.opts.put(args[i].replaceFirst("^--", ""), args[i + 1]);
        }
        int rc;
        try {
            String mode = check.opt("mode", "basic");
            if (mode.equals("basic")) {
                check.basic();
            } else if (mode.equals("ctp")) {
                check.ctp();
            } else {
                throw new IllegalArgumentException("unknown --mode " + mode);
            }
        } catch (Exception e) {
            check.errors.add("exception: " + e);
            e.printStackTrace();
        }
        check.result.put("errors", check.errors);
        check.result.put("ok", check.errors.isEmpty());
        check.result.put("client_version", clientVersion());
        System.out.println(toJson(check.result));
        System.out.flush();
        rc = check.errors.isEmpty() ? 0 : 1;
        // Client threads (a stuck sender) must not keep the JVM alive.
        Runtime.getRuntime().halt(rc);
    }

    String opt(String name, String dflt) {
        String v = opts.get(name);
        if (v == null && dflt == null) {
            throw new IllegalArgumentException("missing --" + name);
        }
        return v == null ? dflt : v;
    }

    int intOpt(String name, int dflt) {
        return Integer.parseInt(opt(name, String.valueOf(dflt)));
    }

    void error(String e) {
        if (errors.size() < 50) {
            errors.add(e);
        }
    }

    // ---------------------------------------------------------------- basic

    void basic() throws Exception {
        String bootstrap = opt("bootstrap", null);
        String prefix = opt("prefix", "txn-java");
        int transactions = intOpt("transactions", 12);
        int perPartition = intOpt("per-partition", 5);
        long timeoutMs = Long.parseLong(opt("timeout-ms", "120000"));

        List<TopicPartition> parts = new ArrayList<>();
        List<NewTopic> topics = new ArrayList<>();
        for (int t = 0; t < 3; t++) {
            String name = prefix + "-" + t;
            topics.add(new NewTopic(name, 4, (short) 1));
            for (int p = 0; p < 4; p++) {
                parts.add(new TopicPartition(name, p));
            }
        }
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(ap)) {
            try {
                admin.createTopics(topics).all().get();
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) {
                    throw e;
                }
            }
        }

        // What each consumer must see, per partition, in order.
        Map<TopicPartition, List<String>> committed = new HashMap<>();
        Map<TopicPartition, List<String>> everything = new HashMap<>();
        Map<TopicPartition, List<String>> open = new HashMap<>();
        for (TopicPartition tp : parts) {
            committed.put(tp, new ArrayList<>());
            everything.put(tp, new ArrayList<>());
            open.put(tp, new ArrayList<>());
        }

        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, prefix + "-producer");
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        int commits = 0;
        int aborts = 0;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(pp)) {
            producer.initTransactions();
            for (int txn = 0; txn <= transactions; txn++) {
                boolean abort = txn % 3 == 1;
                boolean last = txn == transactions; // left open while the consumers read
                producer.beginTransaction();
                for (int i = 0; i < perPartition; i++) {
                    for (TopicPartition tp : parts) {
                        String v = "txn" + txn + "-" + tp + "-" + i + (abort ? "-aborted" : "");
                        producer.send(new ProducerRecord<>(tp.topic(), tp.partition(), "k" + i, v));
                        everything.get(tp).add(v);
                        if (last) {
                            open.get(tp).add(v);
                        } else if (!abort) {
                            committed.get(tp).add(v);
                        }
                    }
                }
                producer.flush(); // so aborted records do reach the log before the marker
                if (last) {
                    break;
                }
                if (abort) {
                    producer.abortTransaction();
                    aborts++;
                } else {
                    producer.commitTransaction();
                    commits++;
                }
            }
            result.put("commits", commits);
            result.put("aborts", aborts);

            // One transaction still open: read_committed stops at its first offset (the LSO).
            ReadResult rc = readAll(bootstrap, parts, "read_committed", timeoutMs);
            ReadResult ru = readAll(bootstrap, parts, "read_uncommitted", timeoutMs);
            compare("read_committed (open txn)", rc.values, committed);
            compare("read_uncommitted", ru.values, everything);
            int openRecords = 0;
            for (TopicPartition tp : parts) {
                long lso = rc.endOffsets.get(tp);
                long hw = ru.endOffsets.get(tp);
                openRecords += open.get(tp).size();
                // The open transaction's records are the last perPartition before the HW.
                if (lso != hw - perPartition) {
                    error(tp + ": LSO " + lso + " with a transaction open, expected HW " + hw
                            + " - " + perPartition);
                }
            }
            result.put("read_committed_open", rc.count);
            result.put("read_uncommitted", ru.count);
            result.put("open_records", openRecords);
            result.put("high_watermarks", sum(ru.endOffsets));
            result.put("lso_open", sum(rc.endOffsets));

            producer.commitTransaction();
            commits++;
            result.put("commits", commits);
            for (TopicPartition tp : parts) {
                committed.get(tp).addAll(open.get(tp));
            }
            ReadResult rc2 = readAll(bootstrap, parts, "read_committed", timeoutMs);
            compare("read_committed (after commit)", rc2.values, committed);
            result.put("read_committed", rc2.count);
            result.put("lso", sum(rc2.endOffsets));
            int expect = 0;
            for (List<String> l : committed.values()) {
                expect += l.size();
            }
            result.put("expected_committed", expect);
        }
    }

    static long sum(Map<TopicPartition, Long> m) {
        long s = 0;
        for (long v : m.values()) {
            s += v;
        }
        return s;
    }

    void compare(String what, Map<TopicPartition, List<String>> got,
                 Map<TopicPartition, List<String>> want) {
        for (TopicPartition tp : want.keySet()) {
            List<String> g = got.getOrDefault(tp, List.of());
            List<String> w = want.get(tp);
            if (!g.equals(w)) {
                error(what + " " + tp + ": got " + g.size() + " records, want " + w.size()
                        + "; first got " + g.subList(0, Math.min(3, g.size()))
                        + " want " + w.subList(0, Math.min(3, w.size())));
            }
        }
    }

    static class ReadResult {
        Map<TopicPartition, List<String>> values = new HashMap<>();
        Map<TopicPartition, Long> endOffsets;
        int count;
    }

    /** Read every partition from the beginning up to its end offset for this isolation level. */
    ReadResult readAll(String bootstrap, List<TopicPartition> parts, String isolation,
                       long timeoutMs) {
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        ReadResult r = new ReadResult();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            r.endOffsets = consumer.endOffsets(parts);
            long deadline = System.currentTimeMillis() + timeoutMs;
            while (System.currentTimeMillis() < deadline && !reached(consumer, r.endOffsets)) {
                ConsumerRecords<String, String> recs = consumer.poll(Duration.ofMillis(200));
                for (ConsumerRecord<String, String> rec : recs) {
                    TopicPartition tp = new TopicPartition(rec.topic(), rec.partition());
                    if (rec.value() == null) {
                        error(isolation + " " + tp + "@" + rec.offset() + ": a record without a value");
                    }
                    if (rec.offset() >= r.endOffsets.get(tp)) {
                        error(isolation + " " + tp + "@" + rec.offset() + " is past end offset "
                                + r.endOffsets.get(tp));
                    }
                    r.values.computeIfAbsent(tp, k -> new ArrayList<>()).add(rec.value());
                    r.count++;
                }
            }
            if (!reached(consumer, r.endOffsets)) {
                error(isolation + ": did not reach the end offsets " + r.endOffsets + " in time");
            }
        }
        return r;
    }

    static boolean reached(KafkaConsumer<?, ?> consumer, Map<TopicPartition, Long> ends) {
        for (Map.Entry<TopicPartition, Long> e : ends.entrySet()) {
            if (consumer.position(e.getKey()) < e.getValue()) {
                return false;
            }
        }
        return true;
    }

    // ---------------------------------------------------------------- ctp

    KafkaProducer<String, String> newTxnProducer(String bootstrap, String tid) {
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, tid);
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, "30000");
        pp.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        KafkaProducer<String, String> p = new KafkaProducer<>(pp);
        p.initTransactions();
        return p;
    }

    void ctp() throws Exception {
        String bootstrap = opt("bootstrap", null);
        String input = opt("input", null);
        String output = opt("output", null);
        String group = opt("group", null);
        String tid = opt("transactional-id", null);
        int batch = intOpt("batch", 100);
        int pauseMs = intOpt("pause-ms", 20);
        long timeoutMs = Long.parseLong(opt("timeout-ms", "150000"));

        // The producer first: initTransactions aborts what a killed predecessor left open, so
        // the consumer's committed offsets (require_stable) are settled when it asks for them.
        KafkaProducer<String, String> producer = newTxnProducer(bootstrap, tid);

        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, String.valueOf(batch));
        cp.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "6000");
        cp.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        cp.put(ConsumerConfig.MAX_POLL_INTERVAL_MS_CONFIG, "30000");
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp);

        List<TopicPartition> inputParts = new ArrayList<>();
        consumer.partitionsFor(input).forEach(pi -> inputParts.add(
                new TopicPartition(input, pi.partition())));
        Map<TopicPartition, Long> ends = consumer.endOffsets(inputParts);
        result.put("input_end", sum(ends));
        consumer.subscribe(List.of(input), new ConsumerRebalanceListener() {
            @Override
            public void onPartitionsRevoked(Collection<TopicPartition> partitions) { }

            @Override
            public void onPartitionsAssigned(Collection<TopicPartition> partitions) { }
        });

        long total = 0;
        int commits = 0;
        int aborts = 0;
        int recreated = 0;
        long deadline = System.currentTimeMillis() + timeoutMs;
        while (System.currentTimeMillis() < deadline) {
            ConsumerRecords<String, String> recs = consumer.poll(Duration.ofMillis(200));
            if (recs.isEmpty()) {
                if (done(consumer, ends)) {
                    break;
                }
                continue;
            }
            try {
                producer.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (ConsumerRecord<String, String> r : recs) {
                    String v = r.value() + "|" + r.partition() + ":" + r.offset();
                    producer.send(new ProducerRecord<>(output, r.key(), v));
                    offsets.put(new TopicPartition(r.topic(), r.partition()),
                            new OffsetAndMetadata(r.offset() + 1));
                }
                producer.sendOffsetsToTransaction(offsets, consumer.groupMetadata());
                producer.commitTransaction();
                commits++;
                total += recs.count();
                System.out.println("committed " + total);
                System.out.flush();
            } catch (ProducerFencedException | InvalidProducerEpochException
                     | OutOfOrderSequenceException | AuthorizationException e) {
                System.err.println("fatal, recreating the producer: " + e);
                producer.close(Duration.ZERO);
                producer = newTxnProducer(bootstrap, tid);
                recreated++;
                rewind(consumer);
            } catch (KafkaException e) {
                System.err.println("aborting: " + e);
                try {
                    producer.abortTransaction();
                    aborts++;
                } catch (KafkaException e2) {
                    System.err.println("abort failed, recreating the producer: " + e2);
                    producer.close(Duration.ZERO);
                    producer = newTxnProducer(bootstrap, tid);
                    recreated++;
                }
                rewind(consumer);
            }
            if (pauseMs > 0) {
                Thread.sleep(pauseMs);
            }
        }
        result.put("processed", total);
        result.put("commits", commits);
        result.put("aborts", aborts);
        result.put("producers_recreated", recreated);
        if (!done(consumer, ends)) {
            error("the group's committed offsets did not reach the input end " + ends
                    + " in time");
        }
        consumer.close(Duration.ofSeconds(5));
        producer.close(Duration.ofSeconds(5));
    }

    /** After an abort, poll again from the group's committed offsets (what the output holds). */
    static void rewind(KafkaConsumer<String, String> consumer) {
        Set<TopicPartition> assigned = consumer.assignment();
        Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(assigned);
        for (TopicPartition tp : assigned) {
            OffsetAndMetadata om = committed.get(tp);
            if (om != null) {
                consumer.seek(tp, om);
            } else {
                consumer.seekToBeginning(List.of(tp));
            }
        }
    }

    static boolean done(KafkaConsumer<String, String> consumer, Map<TopicPartition, Long> ends) {
        Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(ends.keySet());
        for (Map.Entry<TopicPartition, Long> e : ends.entrySet()) {
            OffsetAndMetadata om = committed.get(e.getKey());
            long at = om == null ? 0 : om.offset();
            if (at < e.getValue()) {
                return false;
            }
        }
        return true;
    }

    /** The kafka-clients version on the classpath. */
    static String clientVersion() {
        try (java.io.InputStream in =
                     KafkaProducer.class.getResourceAsStream("/kafka/kafka-version.properties")) {
            Properties p = new Properties();
            if (in != null) {
                p.load(in);
            }
            return p.getProperty("version", "unknown");
        } catch (java.io.IOException e) {
            return "unknown";
        }
    }

    // ---------------------------------------------------------------- json

    static String toJson(Object o) {
        if (o == null) {
            return "null";
        }
        if (o instanceof Map) {
            StringBuilder sb = new StringBuilder("{");
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                sb.append(toJson(String.valueOf(e.getKey()))).append(':').append(toJson(e.getValue()));
            }
            return sb.append('}').toString();
        }
        if (o instanceof Collection) {
            StringBuilder sb = new StringBuilder("[");
            boolean first = true;
            for (Object x : (Collection<?>) o) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                sb.append(toJson(x));
            }
            return sb.append(']').toString();
        }
        if (o instanceof Number || o instanceof Boolean) {
            return o.toString();
        }
        String s = o.toString();
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                default:
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
            }
        }
        return sb.append('"').toString();
    }
}
