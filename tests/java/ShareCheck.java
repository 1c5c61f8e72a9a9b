/*
 * Share-group check (KIP-932) of a Kafka-compatible broker with the official Java client's
 * KafkaShareConsumer.
 *
 * Why: the Java client is the reference share consumer. N consumers (one thread each) in one
 * share group read a topic that already holds --messages records, with implicit acknowledgement
 * (a poll accepts the previous poll's records) and commitSync() after each poll, until every
 * record was delivered or --timeout-ms passes. Then it reports how many records each consumer got,
 * how many distinct (partition, offset) pairs were seen and how many were delivered more than once.
 *
 * Run with the source launcher:
 *   java -cp '<lib>/*' tests/java/ShareCheck.java --bootstrap 127.0.0.1:9092 --topic T --group G
 *        [--consumers 4] [--messages 20000] [--timeout-ms 90000]
 *
 * Prints exactly one JSON line on stdout: {"ok":true,"errors":[],...}. Exit code 0 only if every
 * check passed (all delivered, none twice, every consumer got some).
 */

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.common.serialization.StringDeserializer;

public class ShareCheck {
    public static void main(String[] args) throws Exception {
        Map<String, String> opt = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) opt.put(args[i].replaceFirst("^--", ""), args[i + 1]);
        String bootstrap = opt.get("bootstrap");
        String topic = opt.get("topic");
        String group = opt.get("group");
        int consumers = Integer.parseInt(opt.getOrDefault("consumers", "4"));
        int messages = Integer.parseInt(opt.getOrDefault("messages", "20000"));
        long timeoutMs = Long.parseLong(opt.getOrDefault("timeout-ms", "90000"));
        if (bootstrap == null || topic == null || group == null) {
            System.err.println("need --bootstrap, --topic and --group");
            System.exit(2);
        }
        ConcurrentHashMap<String, AtomicInteger> deliveries = new ConcurrentHashMap<>();
        AtomicInteger[] perConsumer = new AtomicInteger[consumers];
        AtomicBoolean done = new AtomicBoolean(false);
        List<String> errors = java.util.Collections.synchronizedList(new ArrayList<>());
        long deadline = System.currentTimeMillis() + timeoutMs;
        long started = System.nanoTime();
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < consumers; i++) {
            perConsumer[i] = new AtomicInteger();
            final int me = i;
            Thread t = new Thread(() -> {
                Properties p = new Properties();
                p.put("bootstrap.servers", bootstrap);
                p.put("group.id", group);
                p.put("client.id", "share-" + me);
                try (KafkaShareConsumer<String, String> c =
                         new KafkaShareConsumer<>(p, new StringDeserializer(), new StringDeserializer())) {
                    c.subscribe(List.of(topic));
                    while (!done.get() && System.currentTimeMillis() < deadline) {
                        ConsumerRecords<String, String> recs = c.poll(Duration.ofMillis(500));
                        for (ConsumerRecord<String, String> r : recs) {
                            deliveries.computeIfAbsent(r.partition() + ":" + r.offset(), k -> new AtomicInteger())
                                .incrementAndGet();
                            perConsumer[me].incrementAndGet();
                        }
                        c.commitSync();
                        if (deliveries.size() >= messages) done.set(true);
                    }
                    c.poll(Duration.ofMillis(100));
                    c.commitSync();
                } catch (Exception e) {
                    errors.add("consumer " + me + ": " + e);
                }
            });
            t.start();
            threads.add(t);
        }
        for (Thread t : threads) t.join(timeoutMs + 60_000);
        double seconds = (System.nanoTime() - started) / 1e9;
        int twice = 0;
        for (AtomicInteger n : deliveries.values()) if (n.get() > 1) twice++;
        if (deliveries.size() != messages) errors.add("delivered " + deliveries.size() + " of " + messages);
        if (twice > 0) errors.add(twice + " records delivered more than once");
        StringBuilder counts = new StringBuilder("[");
        for (int i = 0; i < consumers; i++) {
            if (perConsumer[i].get() == 0) errors.add("consumer " + i + " got nothing");
            counts.append(i == 0 ? "" : ",").append(perConsumer[i].get());
        }
        counts.append("]");
        StringBuilder errs = new StringBuilder("[");
        for (int i = 0; i < errors.size(); i++) {
            errs.append(i == 0 ? "" : ",").append('"').append(errors.get(i).replace("\\", "\\\\").replace("\"", "'")).append('"');
        }
        errs.append("]");
        System.out.println("{\"ok\":" + errors.isEmpty() + ",\"errors\":" + errs + ",\"distinct\":" + deliveries.size()
            + ",\"twice\":" + twice + ",\"per_consumer\":" + counts + ",\"seconds\":" + seconds
            + ",\"client_version\":\"" + org.apache.kafka.common.utils.internals.AppInfoParser.getVersion() + "\"}");
        System.exit(errors.isEmpty() ? 0 : 1);
    }
}
