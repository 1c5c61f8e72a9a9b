/*
 * Consumer-group check of a Kafka-compatible broker with the official Java client (classic protocol).
 *
 * Why: the Java consumer is the reference implementation of the classic group protocol; if its
 * subscribe() consumers split partitions, hand them over on leave and on a crash without losing or
 * re-reading committed records, and its cooperative and static-membership paths behave, most other
 * clients' groups will work too. One scenario per run (JVM start-up is the dominant cost on small
 * machines, so each scenario is one JVM with a consumer per thread; only a consumer that must be
 * SIGKILLed runs in a child JVM, which is this same program in --role child):
 *
 *   failover     3 consumers (range assignor, eager) on a 6-partition topic split it 2/2/2; 30,000
 *                records are produced in three phases; after phase 1 one consumer close()s, during
 *                phase 3 the child consumer is SIGKILLed; the survivor takes over from the committed
 *                offsets once the child's session times out. Every record must be consumed, each
 *                exactly once except records the killed child consumed after its last commit (it
 *                "processes" each poll for 50 ms before committing, and is killed in that window,
 *                so there are always some).
 *   cooperative  2 consumers with the CooperativeStickyAssignor split 3/3; a third joins; only the
 *                partitions that move may be revoked (one from each), nothing else.
 *   static-cooperative  the same with the CooperativeStickyAssignor, s3 joining after s1 and s2
 *                settled (so the members' subscriptions carry owned partitions).
 *   static       3 static members (group.instance.id) split 2/2/2; each in turn (so the group
 *                leader is among them) is closed (a static member sends no LeaveGroup) and
 *                restarted with the same instance id within the session timeout: it gets the
 *                same partitions back in the same generation, and the others see no revocation,
 *                no assignment and no new generation, then or after the session timeout.
 *
 * Every consumer commits with commitSync() after processing each poll, and records every
 * assignment, revocation, loss, delivery and successful commit in a ledger, which then checks:
 * contiguous offsets per partition and owner (nothing skipped), a handed-over partition resumes at
 * the last committed offset, and no record that was covered by a successful commit is ever
 * delivered again.
 *
 * Consumer settings are the client's defaults except: group.protocol=classic (the default, made
 * explicit), enable.auto.commit=false (commits are manual), auto.offset.reset=earliest,
 * session.timeout.ms (--session-timeout-ms, default 6000, the broker's minimum), and per scenario
 * partition.assignment.strategy or group.instance.id.
 *
 * The request versions the client picked are read from NetworkClient's DEBUG log lines, which are
 * captured (and not printed) in the parent JVM; they are reported as "api_versions". Against Strata
 * kafka-clients 4.4.0 uses FindCoordinator v6, JoinGroup v9, SyncGroup v5, Heartbeat v4,
 * LeaveGroup v5, OffsetCommit v9, OffsetFetch v9 and (AdminClient, after finding no
 * ConsumerGroupDescribe) DescribeGroups v5.
 *
 * Run with the source launcher:
 *   java -cp '<lib>/*' tests/java/GroupCheck.java --bootstrap 127.0.0.1:9092 \
 *        --scenario failover|cooperative|static [--topic T] [--group G] [--messages 30000]
 *        [--session-timeout-ms 6000] [--timeout-ms 80000] [--partitions 6]
 *        [--group-protocol classic|consumer]
 *
 * With --group-protocol consumer (KIP-848) the consumers set neither session.timeout.ms nor an
 * assignor (the client refuses both): the broker's group.consumer.session.timeout.ms must equal
 * --session-timeout-ms, and its uniform assignor takes the CooperativeStickyAssignor's place.
 *
 * Prints exactly one JSON line on stdout: {"scenario":...,"ok":true,"errors":[],...}.
 * Exit code 0 only if every check passed; 1 otherwise; 2 on bad arguments.
 */

import java.io.BufferedReader;
import java.io.BufferedOutputStream;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.MemberDescription;
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
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class GroupCheck {
    static final int MAX_ERRORS = 50;
    static final String COOPERATIVE =
            "org.apache.kafka.clients.consumer.CooperativeStickyAssignor";

    // ---------------------------------------------------------------- arguments

    String role = "main";
    String scenario;
    String bootstrap;
    String topic;
    String group;
    String name; // child only
    String assignor; // child only
    String instanceId; // child only
    String source;
    long processMs = 0; // child only: "processing" time between a poll and its commit
    int messages = 30_000;
    int partitions = 6;
    int sessionTimeoutMs = 6000;
    String groupProtocol = "classic"; // or "consumer" (KIP-848: the broker assigns)
    long timeoutMs = 80_000;

    long start = System.nanoTime();
    long deadline;

    final List<String> errors = Collections.synchronizedList(new ArrayList<>());
    final AtomicInteger errorCount = new AtomicInteger();
    final Map<String, Object> info = Collections.synchronizedMap(new LinkedHashMap<>());
    final Map<String, Long> phaseMs = Collections.synchronizedMap(new LinkedHashMap<>());

    /** NetworkClient "Sending X request with header RequestHeader(apiKey=X, apiVersion=N" lines. */
    static final Map<String, Set<Integer>> API_VERSIONS = new TreeMap<>();
    static final Pattern SENDING = Pattern.compile(
            "Sending (\\w+) request with header RequestHeader\\(apiKey=(\\w+), apiVersion=(\\d+)");

    public static void main(String[] args) {
        GroupCheck check = new GroupCheck();
        try {
            check.parseArgs(args);
        } catch (IllegalArgumentException e) {
            System.err.println("usage: GroupCheck --bootstrap HOST:PORT --scenario failover|cooperative|static"
                    + " [--topic T] [--group G] [--messages N] [--partitions P]"
                    + " [--session-timeout-ms MS] [--timeout-ms MS]");
            System.err.println("error: " + e.getMessage());
            System.exit(2);
        }
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        System.setProperty("org.slf4j.simpleLogger.showLogName", "true");
        System.setProperty("org.slf4j.simpleLogger.showShortLogName", "false");
        if (check.role.equals("child")) {
            Runtime.getRuntime().halt(check.runChild());
        }
        // Capture request versions: NetworkClient at DEBUG, its lines parsed and swallowed.
        System.setProperty("org.slf4j.simpleLogger.log.org.apache.kafka.clients.NetworkClient", "debug");
        System.setErr(new VersionCapturingStream(System.err));
        int rc = check.run();
        System.out.flush();
        System.err.flush();
        // Client threads (a stuck heartbeat or sender) must not keep the JVM alive.
        Runtime.getRuntime().halt(rc);
    }

    static final class VersionCapturingStream extends PrintStream {
        VersionCapturingStream(PrintStream out) {
            super(out, true, StandardCharsets.UTF_8);
        }

        /** Whether this thread's last log line was swallowed (then so is its stack trace). */
        final ThreadLocal<Boolean> swallowing = ThreadLocal.withInitial(() -> false);

        @Override
        public void println(Object x) {
            // Throwable.printStackTrace prints every line with println(Object).
            if (!swallowing.get()) super.println(x);
        }

        @Override
        public void println(String line) {
            boolean debug = line != null && line.contains(" org.apache.kafka.clients.NetworkClient - ")
                    && (line.contains("] DEBUG ") || line.contains("] INFO "));
            swallowing.set(debug);
            if (debug) {
                Matcher m = SENDING.matcher(line);
                if (m.find()) {
                    synchronized (API_VERSIONS) {
                        API_VERSIONS.computeIfAbsent(m.group(2), k -> new TreeSet<>())
                                .add(Integer.parseInt(m.group(3)));
                    }
                }
                return;
            }
            super.println(line);
        }
    }

    void parseArgs(String[] args) {
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException("missing value for " + a);
            }
            String v = args[++i];
            switch (a) {
                case "--role": role = v; break;
                case "--scenario": scenario = v; break;
                case "--bootstrap": bootstrap = v; break;
                case "--topic": topic = v; break;
                case "--group": group = v; break;
                case "--name": name = v; break;
                case "--assignor": assignor = v; break;
                case "--instance-id": instanceId = v; break;
                case "--source": source = v; break;
                case "--process-ms": processMs = Long.parseLong(v); break;
                case "--messages": messages = Integer.parseInt(v); break;
                case "--partitions": partitions = Integer.parseInt(v); break;
                case "--session-timeout-ms": sessionTimeoutMs = Integer.parseInt(v); break;
                case "--timeout-ms": timeoutMs = Long.parseLong(v); break;
                case "--group-protocol": groupProtocol = v; break;
                default: throw new IllegalArgumentException("unknown argument " + a);
            }
        }
        if (bootstrap == null) {
            throw new IllegalArgumentException("--bootstrap is required");
        }
        if (role.equals("child")) {
            if (topic == null || group == null || name == null) {
                throw new IllegalArgumentException("a child needs --topic, --group and --name");
            }
        } else {
            if (!Arrays.asList("failover", "cooperative", "static", "static-cooperative").contains(scenario)) {
                throw new IllegalArgumentException("bad --scenario " + scenario);
            }
            if (topic == null) topic = "group-check-" + scenario;
            if (group == null) group = "group-check-" + scenario;
        }
        deadline = start + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
    }

    void error(String msg) {
        errorCount.incrementAndGet();
        synchronized (errors) {
            if (errors.size() < MAX_ERRORS) errors.add(msg);
        }
    }

    /** Thrown to abandon a scenario after a failed wait (already recorded as an error). */
    static final class Abort extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Abort(String m) {
            super(m);
        }
    }

    long elapsedMs() {
        return TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
    }

    void phase(String what) {
        phaseMs.put(what, elapsedMs());
    }

    long remainingMs() {
        return Math.max(1, TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime()));
    }

    /** Poll cond every 20 ms for at most limitMs (and never past the overall deadline). */
    void await(String what, long limitMs, BooleanSupplier cond, java.util.function.Supplier<String> state) {
        long until = Math.min(deadline, System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(limitMs));
        while (true) {
            if (cond.getAsBoolean()) return;
            if (System.nanoTime() >= until) break;
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        String msg = "timed out after " + limitMs + " ms waiting for: " + what + "; state: " + state.get();
        error(msg);
        throw new Abort(msg);
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
        return "value-" + i;
    }

    // ---------------------------------------------------------------- events and the ledger

    /** Where a consumer reports what happens to it: the ledger in-process, stdout in a child. */
    interface Sink {
        void ready(String who);

        void assigned(String who, Collection<Integer> parts, int generation);

        void revoked(String who, Collection<Integer> parts);

        void lost(String who, Collection<Integer> parts);

        void delivered(String who, int partition, long offset, String key, String value);

        void committed(String who, Map<Integer, Long> offsets);

        void commitFailed(String who, Map<Integer, Long> offsets, String why);

        void generation(String who, int generation);

        void closed(String who);

        void problem(String who, String msg);

        default void flush() {}
    }

    static final class MemberView {
        final String name;
        final TreeSet<Integer> owned = new TreeSet<>();
        final List<String> events = new ArrayList<>();
        final Map<Integer, Integer> epoch = new HashMap<>(); // partition -> ownership epoch
        final Map<Integer, Long> lastOffset = new HashMap<>(); // partition -> last delivered
        final Map<Integer, Long> firstExpected = new HashMap<>(); // partition -> resume point
        final Map<Integer, Long> lastCommit = new HashMap<>(); // partition -> last commit (any epoch)
        boolean ready;
        boolean closed;
        boolean killed;
        int generation = -1;
        int deliveries;

        MemberView(String name) {
            this.name = name;
        }
    }

    /** All deliveries and commits of a scenario; every method is synchronized. */
    final class Ledger implements Sink {
        final Map<String, MemberView> members = new LinkedHashMap<>();
        final int[] ackPartition;
        final long[] ackOffset;
        final List<List<String>> deliveriesByIndex; // index -> "who#epoch" per delivery
        final Map<String, Long> commitByEpoch = new HashMap<>(); // "who#epoch#partition" -> offset
        final Map<Integer, Long> known = new HashMap<>(); // partition -> highest successful commit
        final Map<Integer, String> lastOwner = new HashMap<>();
        final Map<String, Object> takeovers = new TreeMap<>();
        int distinct;
        int deliveries;
        int commitFailures;

        Ledger(int n) {
            ackPartition = new int[n];
            ackOffset = new long[n];
            Arrays.fill(ackPartition, -1);
            Arrays.fill(ackOffset, -1L);
            deliveriesByIndex = new ArrayList<>(n);
            for (int i = 0; i < n; i++) deliveriesByIndex.add(null);
        }

        synchronized MemberView m(String who) {
            return members.computeIfAbsent(who, MemberView::new);
        }

        synchronized void acked(int idx, int partition, long offset) {
            ackPartition[idx] = partition;
            ackOffset[idx] = offset;
        }

        synchronized int acked() {
            int n = 0;
            for (int p : ackPartition) if (p >= 0) n++;
            return n;
        }

        @Override
        public synchronized void ready(String who) {
            m(who).ready = true;
        }

        @Override
        public synchronized void assigned(String who, Collection<Integer> parts, int generation) {
            MemberView v = m(who);
            v.generation = generation;
            v.events.add("gen " + generation + " assigned " + new TreeSet<>(parts));
            for (int p : parts) {
                if (!v.owned.add(p)) {
                    problem(who, "assigned partition " + p + " it already owns");
                }
                v.epoch.merge(p, 1, Integer::sum);
                v.lastOffset.remove(p);
                v.firstExpected.put(p, known.getOrDefault(p, 0L));
                String prev = lastOwner.put(p, who);
                for (MemberView o : members.values()) {
                    if (o != v && o.owned.contains(p) && !o.killed && !o.closed) {
                        problem(who, "assigned partition " + p + " still owned by " + o.name);
                    }
                }
                if (prev != null && !prev.equals(who) && m(prev).killed) {
                    Map<String, Object> t = new LinkedHashMap<>();
                    t.put("from", prev);
                    t.put("to", who);
                    t.put("from_last_commit", m(prev).lastCommit.get(p));
                    t.put("from_last_delivered", m(prev).lastOffset.get(p));
                    t.put("group_committed", known.get(p));
                    takeovers.put(Integer.toString(p), t);
                }
            }
        }

        @Override
        public synchronized void revoked(String who, Collection<Integer> parts) {
            MemberView v = m(who);
            v.events.add("revoked " + new TreeSet<>(parts));
            for (int p : parts) {
                if (!v.owned.remove(p)) problem(who, "revoked partition " + p + " it did not own");
            }
        }

        @Override
        public synchronized void lost(String who, Collection<Integer> parts) {
            MemberView v = m(who);
            v.events.add("lost " + new TreeSet<>(parts));
            v.owned.removeAll(parts);
        }

        synchronized void killed(String who) {
            MemberView v = m(who);
            v.killed = true;
            v.events.add("killed owning " + v.owned);
        }

        @Override
        public synchronized void delivered(String who, int p, long o, String k, String val) {
            MemberView v = m(who);
            deliveries++;
            v.deliveries++;
            String where = who + " got partition " + p + " offset " + o + ": ";
            int idx;
            try {
                if (k == null || !k.startsWith("key-")) throw new NumberFormatException();
                idx = Integer.parseInt(k.substring(4));
                if (idx < 0 || idx >= ackPartition.length) throw new NumberFormatException();
            } catch (NumberFormatException e) {
                problem(who, where + "unexpected key " + k);
                return;
            }
            if (!value(idx).equals(val)) problem(who, where + "value " + val + " != " + value(idx));
            if (!v.owned.contains(p)) {
                problem(who, where + "but owns only " + v.owned);
            }
            Long expected = v.firstExpected.remove(p);
            Long last = v.lastOffset.get(p);
            if (expected != null) {
                if (o < expected) {
                    problem(who, where + "first record after assignment is below the group's committed offset "
                            + expected + " (committed records redelivered)");
                } else if (o > expected) {
                    MemberView prev = null;
                    Object t = takeovers.get(Integer.toString(p));
                    if (t instanceof Map && who.equals(((Map<?, ?>) t).get("to"))) {
                        prev = m((String) ((Map<?, ?>) t).get("from"));
                    }
                    Long prevLast = prev == null ? null : prev.lastOffset.get(p);
                    // A killed member may have committed once more than it managed to report.
                    if (prev == null || prevLast == null || o > prevLast + 1) {
                        problem(who, where + "first record after assignment, but the group's committed offset is "
                                + expected + " (records skipped)");
                    }
                }
                Object t = takeovers.get(Integer.toString(p));
                if (t instanceof Map && who.equals(((Map<?, ?>) t).get("to"))) {
                    @SuppressWarnings("unchecked")
                    Map<String, Object> tm = (Map<String, Object>) t;
                    tm.putIfAbsent("to_first_offset", o);
                }
            } else if (last != null && o != last + 1) {
                problem(who, where + "after offset " + last + " (" + (o > last ? "gap: records skipped" : "out of order") + ")");
            }
            v.lastOffset.put(p, o);
            List<String> ds = deliveriesByIndex.get(idx);
            if (ds == null) {
                ds = new ArrayList<>(1);
                deliveriesByIndex.set(idx, ds);
                distinct++;
            }
            ds.add(who + "#" + v.epoch.getOrDefault(p, 0) + "#" + p + "#" + o);
        }

        @Override
        public synchronized void committed(String who, Map<Integer, Long> offsets) {
            MemberView v = m(who);
            for (Map.Entry<Integer, Long> e : offsets.entrySet()) {
                int p = e.getKey();
                long off = e.getValue();
                commitByEpoch.merge(who + "#" + v.epoch.getOrDefault(p, 0) + "#" + p, off, Math::max);
                v.lastCommit.merge(p, off, Math::max);
                known.merge(p, off, Math::max);
            }
        }

        @Override
        public synchronized void commitFailed(String who, Map<Integer, Long> offsets, String why) {
            commitFailures++;
            m(who).events.add("commit of " + offsets + " failed: " + why);
        }

        @Override
        public synchronized void generation(String who, int generation) {
            m(who).generation = generation;
        }

        @Override
        public synchronized void closed(String who) {
            m(who).closed = true;
        }

        @Override
        public void problem(String who, String msg) {
            error(who + ": " + msg);
        }

        synchronized int distinct() {
            return distinct;
        }

        synchronized TreeSet<Integer> owned(String who) {
            return new TreeSet<>(m(who).owned);
        }

        synchronized boolean isReady(String who) {
            return m(who).ready;
        }

        synchronized boolean isClosed(String who) {
            return m(who).closed;
        }

        synchronized int generationOf(String who) {
            return m(who).generation;
        }

        synchronized List<String> events(String who) {
            return new ArrayList<>(m(who).events);
        }

        /** Records with index >= from that `who` has been given. */
        synchronized int deliveredFrom(String who, int from) {
            int n = 0;
            for (int i = from; i < deliveriesByIndex.size(); i++) {
                List<String> ds = deliveriesByIndex.get(i);
                if (ds == null) continue;
                for (String d : ds) if (d.startsWith(who + "#")) n++;
            }
            return n;
        }

        /** Records `who` has been given after its last commit of their partition. */
        synchronized int uncommitted(String who) {
            MemberView v = m(who);
            int n = 0;
            for (Map.Entry<Integer, Long> e : v.lastOffset.entrySet()) {
                long committed = v.lastCommit.getOrDefault(e.getKey(), 0L);
                n += (int) Math.max(0, e.getValue() + 1 - committed);
            }
            return n;
        }

        /** Every listed member owns `each` partitions, disjoint, covering all of them. */
        synchronized boolean split(List<String> names, int each) {
            Set<Integer> all = new HashSet<>();
            for (String n : names) {
                MemberView v = m(n);
                if (v.owned.size() != each) return false;
                all.addAll(v.owned);
            }
            return all.size() == names.size() * each && all.size() == partitions;
        }

        synchronized Map<String, Object> assignment(List<String> names) {
            Map<String, Object> out = new LinkedHashMap<>();
            for (String n : names) out.put(n, new ArrayList<>(m(n).owned));
            return out;
        }

        /** Log end offsets as acknowledged to the producer. */
        synchronized Map<Integer, Long> ends() {
            Map<Integer, Long> out = new TreeMap<>();
            for (int p = 0; p < partitions; p++) out.put(p, 0L);
            for (int i = 0; i < ackPartition.length; i++) {
                if (ackPartition[i] >= 0) out.merge(ackPartition[i], ackOffset[i] + 1, Math::max);
            }
            return out;
        }

        synchronized boolean allCommitted(int n) {
            if (distinct < n || acked() < n) return false;
            for (Map.Entry<Integer, Long> e : ends().entrySet()) {
                if (known.getOrDefault(e.getKey(), 0L) < e.getValue()) return false;
            }
            return true;
        }

        synchronized String state() {
            Map<String, Object> s = new LinkedHashMap<>();
            s.put("acked", acked());
            s.put("distinct_consumed", distinct);
            s.put("deliveries", deliveries);
            s.put("committed", new TreeMap<>(known));
            s.put("ends", ends());
            for (MemberView v : members.values()) {
                Map<String, Object> mv = new LinkedHashMap<>();
                mv.put("owned", new ArrayList<>(v.owned));
                mv.put("generation", v.generation);
                mv.put("closed", v.closed);
                mv.put("killed", v.killed);
                mv.put("deliveries", v.deliveries);
                List<String> ev = v.events;
                mv.put("events", ev.subList(Math.max(0, ev.size() - 8), ev.size()));
                s.put(v.name, mv);
            }
            return toJson(s);
        }

        /**
         * The final verdict over `n` records: each acknowledged and delivered, at the offset it was
         * acknowledged with, and never delivered again after a delivery that a commit covered.
         * Returns how many redeliveries there were, by the member that first got the record.
         */
        synchronized Map<String, Integer> verify(int n) {
            Map<String, Integer> redelivered = new TreeMap<>();
            int missing = 0;
            StringBuilder first = new StringBuilder();
            for (int i = 0; i < n; i++) {
                if (ackPartition[i] < 0) {
                    problem("producer", "record " + i + " was never acknowledged");
                    continue;
                }
                List<String> ds = deliveriesByIndex.get(i);
                if (ds == null) {
                    if (missing < 10) first.append(missing == 0 ? "" : ",").append(i);
                    missing++;
                    continue;
                }
                int covered = 0;
                for (String d : ds) {
                    String[] f = d.split("#");
                    int p = Integer.parseInt(f[2]);
                    long o = Long.parseLong(f[3]);
                    if (p != ackPartition[i] || o != ackOffset[i]) {
                        problem(f[0], "record " + i + " delivered at partition " + p + " offset " + o
                                + ", acknowledged at " + ackPartition[i] + "/" + ackOffset[i]);
                    }
                    Long c = commitByEpoch.get(f[0] + "#" + f[1] + "#" + f[2]);
                    if (c != null && c > o) covered++;
                }
                if (ds.size() > 1) {
                    for (int j = 0; j < ds.size() - 1; j++) {
                        redelivered.merge(ds.get(j).split("#")[0], 1, Integer::sum);
                    }
                    if (covered > 1) {
                        problem("ledger", "record " + i + " consumed and committed " + covered
                                + " times: " + ds);
                    }
                }
            }
            if (missing > 0) {
                problem("ledger", missing + " of " + n + " records never consumed, first: [" + first + "]");
            }
            return redelivered;
        }
    }

    /** The child's Sink: one line per event on stdout, parsed back by ChildReader. */
    static final class PrintSink implements Sink {
        final PrintStream out = new PrintStream(
                new BufferedOutputStream(new FileOutputStream(FileDescriptor.out), 1 << 16), false,
                StandardCharsets.UTF_8);

        static String parts(Collection<Integer> ps) {
            StringBuilder sb = new StringBuilder();
            for (int p : new TreeSet<>(ps)) sb.append(sb.length() == 0 ? "" : ",").append(p);
            return sb.length() == 0 ? "-" : sb.toString();
        }

        static String offsets(Map<Integer, Long> offs) {
            StringBuilder sb = new StringBuilder();
            for (Map.Entry<Integer, Long> e : new TreeMap<>(offs).entrySet()) {
                sb.append(sb.length() == 0 ? "" : ",").append(e.getKey()).append(':').append(e.getValue());
            }
            return sb.length() == 0 ? "-" : sb.toString();
        }

        public synchronized void ready(String who) {
            out.println("READY");
            out.flush();
        }

        public synchronized void assigned(String who, Collection<Integer> ps, int gen) {
            out.println("A " + gen + " " + parts(ps));
            out.flush();
        }

        public synchronized void revoked(String who, Collection<Integer> ps) {
            out.println("R " + parts(ps));
            out.flush();
        }

        public synchronized void lost(String who, Collection<Integer> ps) {
            out.println("L " + parts(ps));
            out.flush();
        }

        public synchronized void delivered(String who, int p, long o, String k, String v) {
            out.println("D " + p + " " + o + " " + k + " " + v);
        }

        public synchronized void committed(String who, Map<Integer, Long> offs) {
            out.println("C " + offsets(offs));
            out.flush();
        }

        public synchronized void commitFailed(String who, Map<Integer, Long> offs, String why) {
            out.println("F " + offsets(offs) + " " + why.replace('\n', ' '));
            out.flush();
        }

        public synchronized void generation(String who, int gen) {
            out.println("G " + gen);
        }

        public synchronized void closed(String who) {
            out.println("CLOSED");
            out.flush();
        }

        public synchronized void problem(String who, String msg) {
            out.println("E " + msg.replace('\n', ' '));
            out.flush();
        }

        public synchronized void flush() {
            out.flush();
        }
    }

    static List<Integer> parseParts(String s) {
        List<Integer> out = new ArrayList<>();
        if (s.equals("-")) return out;
        for (String x : s.split(",")) out.add(Integer.parseInt(x));
        return out;
    }

    static Map<Integer, Long> parseOffsets(String s) {
        Map<Integer, Long> out = new TreeMap<>();
        if (s.equals("-")) return out;
        for (String x : s.split(",")) {
            String[] kv = x.split(":");
            out.put(Integer.parseInt(kv[0]), Long.parseLong(kv[1]));
        }
        return out;
    }

    /** Feeds a child's event lines into the ledger until the child's stdout closes. */
    Thread childReader(Process proc, String who, Sink sink) {
        Thread t = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(
                    new InputStreamReader(proc.getInputStream(), StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                    try {
                        String[] f = line.split(" ", 3);
                        switch (f[0]) {
                            case "READY": sink.ready(who); break;
                            case "A": sink.assigned(who, parseParts(f[2]), Integer.parseInt(f[1])); break;
                            case "R": sink.revoked(who, parseParts(f[1])); break;
                            case "L": sink.lost(who, parseParts(f[1])); break;
                            case "D": {
                                String[] d = line.split(" ");
                                sink.delivered(who, Integer.parseInt(d[1]), Long.parseLong(d[2]), d[3], d[4]);
                                break;
                            }
                            case "C": sink.committed(who, parseOffsets(f[1])); break;
                            case "F": sink.commitFailed(who, parseOffsets(f[1]), f.length > 2 ? f[2] : ""); break;
                            case "G": sink.generation(who, Integer.parseInt(f[1])); break;
                            case "CLOSED": sink.closed(who); break;
                            case "E": sink.problem(who, line.substring(2)); break;
                            default: sink.problem(who, "unparsable child line: " + line);
                        }
                    } catch (RuntimeException e) {
                        // A SIGKILL can cut the last line short; anything else is a real problem.
                        sink.problem(who, "bad child line " + line + ": " + describe(e));
                    }
                }
            } catch (java.io.IOException e) {
                // stream closed: the child is gone
            }
        }, "child-reader-" + who);
        t.setDaemon(true);
        t.start();
        return t;
    }

    // ---------------------------------------------------------------- consumers

    Properties consumerProps(String clientId, String assignorClass, String groupInstanceId) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, clientId);
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, groupProtocol);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        if (groupProtocol.equals("classic")) {
            p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, Integer.toString(sessionTimeoutMs));
            if (assignorClass != null) {
                p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignorClass);
            }
        } // consumer: the session timeout and the assignor are the broker's (the group's configs)
        if (groupInstanceId != null) {
            p.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, groupInstanceId);
        }
        return p;
    }

    /** One subscribe() consumer: poll, hand each record to the sink, commitSync, repeat. */
    final class Worker implements Runnable, ConsumerRebalanceListener {
        final String who;
        final Properties props;
        final Sink sink;
        volatile boolean stop;
        long processMs;
        KafkaConsumer<String, String> consumer;
        Thread thread;

        Worker(String who, Properties props, Sink sink) {
            this.who = who;
            this.props = props;
            this.sink = sink;
        }

        Worker start() {
            thread = new Thread(this, "consumer-" + who);
            thread.setDaemon(true);
            thread.start();
            return this;
        }

        static List<Integer> parts(Collection<TopicPartition> tps) {
            List<Integer> out = new ArrayList<>();
            for (TopicPartition tp : tps) out.add(tp.partition());
            return out;
        }

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> tps) {
            sink.assigned(who, parts(tps), consumer.groupMetadata().generationId());
        }

        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> tps) {
            sink.revoked(who, parts(tps));
        }

        @Override
        public void onPartitionsLost(Collection<TopicPartition> tps) {
            sink.lost(who, parts(tps));
        }

        @Override
        public void run() {
            try {
                consumer = new KafkaConsumer<>(props);
                consumer.subscribe(Collections.singletonList(topic), this);
                sink.ready(who);
                int lastGen = -2;
                while (!stop && System.nanoTime() < deadline) {
                    ConsumerRecords<String, String> recs = consumer.poll(Duration.ofMillis(100));
                    if (!recs.isEmpty()) {
                        Map<TopicPartition, OffsetAndMetadata> commit = new HashMap<>();
                        Map<Integer, Long> offs = new TreeMap<>();
                        for (ConsumerRecord<String, String> r : recs) {
                            sink.delivered(who, r.partition(), r.offset(), r.key(), r.value());
                            commit.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                            offs.put(r.partition(), r.offset() + 1);
                        }
                        sink.flush();
                        if (processMs > 0) Thread.sleep(processMs);
                        try {
                            consumer.commitSync(commit);
                            sink.committed(who, offs);
                        } catch (Exception e) {
                            sink.commitFailed(who, offs, describe(e));
                        }
                    }
                    int gen = consumer.groupMetadata().generationId();
                    if (gen != lastGen) {
                        sink.generation(who, gen);
                        lastGen = gen;
                    }
                    sink.flush();
                }
            } catch (Throwable t) {
                sink.problem(who, "consumer failed: " + describe(t));
            } finally {
                if (consumer != null) {
                    try {
                        consumer.close(); // a dynamic member sends LeaveGroup; a static one does not
                    } catch (Throwable t) {
                        sink.problem(who, "close failed: " + describe(t));
                    }
                }
                sink.closed(who);
                sink.flush();
            }
        }
    }

    /** --role child: one Worker on the main thread, events to stdout, until killed. */
    int runChild() {
        // Exit when the parent goes away (our stdin is its pipe), so no JVM outlives a check.
        Thread watcher = new Thread(() -> {
            try {
                while (System.in.read() >= 0) {
                    // ignore input
                }
            } catch (java.io.IOException e) {
                // fall through
            }
            Runtime.getRuntime().halt(3);
        }, "stdin-watcher");
        watcher.setDaemon(true);
        watcher.start();
        PrintSink sink = new PrintSink();
        Worker w = new Worker(name, consumerProps(name, assignor, instanceId), sink);
        w.processMs = processMs;
        w.run();
        sink.flush();
        return 0;
    }

    Process startChild(String who) throws java.io.IOException {
        String java = ProcessHandle.current().info().command().orElse("java");
        String src = source;
        if (src == null) {
            for (String a : ProcessHandle.current().info().arguments().orElse(new String[0])) {
                if (a.endsWith("GroupCheck.java")) src = a;
            }
        }
        List<String> cmd = new ArrayList<>(Arrays.asList(java, "-Xmx256m", "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1", "-cp", System.getProperty("java.class.path")));
        cmd.add(src != null ? src : "GroupCheck");
        cmd.addAll(Arrays.asList("--role", "child", "--name", who, "--bootstrap", bootstrap, "--topic", topic,
                "--group", group, "--session-timeout-ms", Integer.toString(sessionTimeoutMs),
                "--process-ms", "50", "--group-protocol", groupProtocol,
                "--timeout-ms", Long.toString(remainingMs())));
        ProcessBuilder pb = new ProcessBuilder(cmd);
        pb.redirectError(ProcessBuilder.Redirect.INHERIT);
        return pb.start();
    }

    // ---------------------------------------------------------------- topic and producer

    void createTopic() throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "group-check-admin");
        Admin admin = Admin.create(p);
        try {
            admin.createTopics(Collections.singleton(new NewTopic(topic, partitions, (short) 1)))
                    .all().get(Math.min(30_000, remainingMs()), TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            error("createTopics failed: " + describe(e.getCause()));
            throw new Abort("createTopics");
        } catch (java.util.concurrent.TimeoutException e) {
            error("createTopics did not complete within 30 s");
            throw new Abort("createTopics");
        } finally {
            // Bounded: a plain close() waits for in-flight calls to hit their own 60 s timeout.
            admin.close(Duration.ofSeconds(5));
        }
    }

    KafkaProducer<String, String> newProducer() throws InterruptedException {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "group-check-producer");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "15000"); // partitionsFor() and send() wait at most this
        KafkaProducer<String, String> producer = new KafkaProducer<>(p);
        String last = "";
        long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (System.nanoTime() < Math.min(until, deadline)) {
            try {
                List<PartitionInfo> infos = producer.partitionsFor(topic);
                if (infos.size() == partitions && infos.stream().allMatch(x -> x.leader() != null)) {
                    return producer;
                }
                last = infos.size() + " partitions";
            } catch (Exception e) {
                last = describe(e);
            }
            Thread.sleep(100);
        }
        producer.close(Duration.ofSeconds(5));
        error("topic " + topic + " not ready: " + last);
        throw new Abort("topic not ready");
    }

    final List<String> sendErrors = Collections.synchronizedList(new ArrayList<>());

    /** Send records [from, to), `step` at a time with `pauseMs` between steps; does not wait for acks. */
    void send(KafkaProducer<String, String> producer, Ledger ledger, int from, int to, int step, long pauseMs) {
        for (int i = from; i < to; i++) {
            final int idx = i;
            producer.send(new ProducerRecord<>(topic, key(i), value(i)), (md, ex) -> {
                if (ex != null) {
                    if (sendErrors.size() < 10) sendErrors.add("send " + idx + " failed: " + describe(ex));
                } else {
                    ledger.acked(idx, md.partition(), md.offset());
                }
            });
            if (pauseMs > 0 && (i - from + 1) % step == 0) {
                try {
                    Thread.sleep(pauseMs);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        }
    }

    Thread sendInBackground(KafkaProducer<String, String> producer, Ledger ledger, int from, int to, int step,
                            long pauseMs) {
        Thread t = new Thread(() -> send(producer, ledger, from, to, step, pauseMs), "sender");
        t.setDaemon(true);
        t.start();
        return t;
    }

    void awaitAcked(Ledger ledger, int n) {
        await(n + " records acknowledged", 30_000, () -> ledger.acked() >= n || !sendErrors.isEmpty(),
                ledger::state);
        if (!sendErrors.isEmpty()) {
            for (String e : sendErrors) error(e);
            throw new Abort("send failed");
        }
    }

    void awaitConsumed(Ledger ledger, int n, long limitMs) {
        await("all " + n + " records consumed", limitMs, () -> ledger.distinct() >= n, ledger::state);
    }

    void awaitCommitted(Ledger ledger, int n, long limitMs) {
        await("all " + n + " records consumed and committed", limitMs, () -> ledger.allCommitted(n), ledger::state);
    }

    Admin admin() {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "group-check-admin");
        return Admin.create(p);
    }

    /** The group's committed offsets (OffsetFetch through AdminClient) must be the log ends. */
    void checkGroupOffsets(Ledger ledger) {
        Admin admin = admin();
        try {
            Map<TopicPartition, OffsetAndMetadata> got = admin.listConsumerGroupOffsets(group)
                    .partitionsToOffsetAndMetadata().get(Math.min(15_000, remainingMs()), TimeUnit.MILLISECONDS);
            Map<String, Long> shown = new TreeMap<>();
            for (Map.Entry<TopicPartition, OffsetAndMetadata> e : got.entrySet()) {
                shown.put(e.getKey().toString(), e.getValue() == null ? null : e.getValue().offset());
            }
            info.put("group_offsets", shown);
            for (Map.Entry<Integer, Long> e : ledger.ends().entrySet()) {
                OffsetAndMetadata om = got.get(new TopicPartition(topic, e.getKey()));
                Long off = om == null ? null : om.offset();
                if (off == null || !off.equals(e.getValue())) {
                    error("group committed offset of partition " + e.getKey() + " is " + off
                            + ", log end is " + e.getValue());
                }
            }
        } catch (Exception e) {
            error("listConsumerGroupOffsets failed: " + describe(e));
        } finally {
            admin.close(Duration.ofSeconds(5));
        }
    }

    /** DescribeGroups through AdminClient; returns the description or null (after an error). */
    ConsumerGroupDescription describeGroup() {
        Admin admin = admin();
        try {
            ConsumerGroupDescription d = admin.describeConsumerGroups(Collections.singletonList(group))
                    .describedGroups().get(group).get(Math.min(15_000, remainingMs()), TimeUnit.MILLISECONDS);
            Map<String, Object> shown = new LinkedHashMap<>();
            shown.put("state", String.valueOf(d.groupState()));
            shown.put("type", String.valueOf(d.type()));
            shown.put("assignor", d.partitionAssignor());
            List<Object> ms = new ArrayList<>();
            for (MemberDescription md : d.members()) {
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("client_id", md.clientId());
                m.put("instance_id", md.groupInstanceId().orElse(null));
                List<Integer> ps = new ArrayList<>();
                for (TopicPartition tp : md.assignment().topicPartitions()) ps.add(tp.partition());
                Collections.sort(ps);
                m.put("partitions", ps);
                ms.add(m);
            }
            shown.put("members", ms);
            info.put("describe", shown);
            return d;
        } catch (Exception e) {
            error("describeConsumerGroups failed: " + describe(e));
            return null;
        } finally {
            admin.close(Duration.ofSeconds(5));
        }
    }

    /** Stop every consumer and wait (35 s in all: close() alone may take 30) for them to close. */
    void stopAll(Ledger ledger, List<Worker> workers) {
        for (Worker w : workers) w.stop = true;
        long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(35);
        for (Worker w : workers) {
            try {
                w.thread.join(Math.max(1, TimeUnit.NANOSECONDS.toMillis(until - System.nanoTime())));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            if (w.thread.isAlive()) error(w.who + " did not close within 35 s");
        }
    }

    // ---------------------------------------------------------------- scenarios

    int run() {
        Ledger ledger = new Ledger(scenario.equals("failover") ? messages : 6_000);
        List<Worker> workers = new ArrayList<>();
        List<Process> children = new ArrayList<>();
        KafkaProducer<String, String> producer = null;
        try {
            createTopic();
            producer = newProducer();
            phase("topic_ready");
            switch (scenario) {
                case "failover": failover(ledger, producer, workers, children); break;
                case "cooperative": cooperative(ledger, producer, workers); break;
                case "static-cooperative": staticMembership(ledger, producer, workers, COOPERATIVE); break;
                default: staticMembership(ledger, producer, workers, null); break;
            }
        } catch (Abort e) {
            // recorded
        } catch (Throwable t) {
            error("unexpected: " + describe(t));
        } finally {
            for (Process c : children) {
                if (c.isAlive()) {
                    c.destroyForcibly();
                    try {
                        c.waitFor(10, TimeUnit.SECONDS);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
            }
            stopAll(ledger, workers);
            if (producer != null) producer.close(Duration.ofSeconds(5));
        }
        long totalMs = elapsedMs();
        boolean ok = errorCount.get() == 0;
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("scenario", scenario);
        m.put("ok", ok);
        m.put("errors", new ArrayList<>(errors));
        m.put("error_count", errorCount.get());
        m.put("client_version", clientVersion());
        m.put("topic", topic);
        m.put("group", group);
        m.put("session_timeout_ms", sessionTimeoutMs);
        m.put("acked", ledger.acked());
        synchronized (ledger) {
            m.put("consumed", ledger.distinct);
            m.put("deliveries", ledger.deliveries);
            m.put("commit_failures", ledger.commitFailures);
        }
        m.putAll(info);
        Map<String, Object> events = new LinkedHashMap<>();
        synchronized (ledger) {
            for (MemberView v : ledger.members.values()) events.put(v.name, new ArrayList<>(v.events));
        }
        m.put("events", events);
        synchronized (API_VERSIONS) {
            Map<String, Object> versions = new TreeMap<>();
            for (Map.Entry<String, Set<Integer>> e : API_VERSIONS.entrySet()) {
                versions.put(e.getKey(), e.getValue().size() == 1 ? e.getValue().iterator().next()
                        : new ArrayList<>(e.getValue()));
            }
            m.put("api_versions", versions);
        }
        m.put("phase_ms", new LinkedHashMap<>(phaseMs));
        m.put("total_ms", totalMs);
        System.out.println(toJson(m));
        return ok ? 0 : 1;
    }

    void failover(Ledger ledger, KafkaProducer<String, String> producer, List<Worker> workers,
                  List<Process> children) throws Exception {
        int third = messages / 3;
        // The child JVM is slow to start: launch it first so all three join the first generation.
        Process child = startChild("c3");
        children.add(child);
        Thread reader = childReader(child, "c3", ledger);
        await("child consumer c3 started", 40_000, () -> ledger.isReady("c3") || !child.isAlive(), ledger::state);
        if (!child.isAlive()) {
            error("child consumer exited with " + child.exitValue());
            throw new Abort("child died");
        }
        phase("child_ready");
        for (String n : Arrays.asList("c1", "c2")) {
            workers.add(new Worker(n, consumerProps(n, null, null), ledger).start());
        }
        List<String> three = Arrays.asList("c1", "c2", "c3");
        await("c1, c2, c3 split the " + partitions + " partitions 2/2/2", 45_000,
                () -> ledger.split(three, partitions / 3), ledger::state);
        info.put("assignment_3", ledger.assignment(three));
        phase("split_3");

        // Phase 1: all three consume.
        send(producer, ledger, 0, third, 0, 0);
        awaitAcked(ledger, third);
        awaitConsumed(ledger, third, 30_000);
        awaitCommitted(ledger, third, 10_000);
        for (String n : three) {
            if (ledger.m(n).deliveries == 0) error(n + " consumed nothing while owning " + ledger.owned(n));
        }
        phase("phase1_consumed");

        // Phase 2: c1 leaves (close() -> LeaveGroup) while records keep coming.
        Thread sender = sendInBackground(producer, ledger, third, 2 * third, 500, 50);
        Worker c1 = workers.get(0);
        c1.stop = true;
        c1.thread.join(Math.min(35_000, remainingMs()));
        if (c1.thread.isAlive()) {
            error("c1 close() did not return within 35 s");
            throw new Abort("c1 close");
        }
        phase("c1_closed");
        List<String> two = Arrays.asList("c2", "c3");
        await("c2, c3 split the partitions 3/3 after c1 left", 30_000,
                () -> ledger.split(two, partitions / 2), ledger::state);
        info.put("assignment_after_leave", ledger.assignment(two));
        phase("split_2");
        sender.join(Math.min(30_000, remainingMs()));
        awaitAcked(ledger, 2 * third);
        awaitConsumed(ledger, 2 * third, 30_000);
        phase("phase2_consumed");

        // Phase 3: SIGKILL the child while it is consuming; c2 must take over from its commits.
        sender = sendInBackground(producer, ledger, 2 * third, messages, 500, 100);
        // c3 takes 50 ms to "process" each poll before committing it: kill it inside that window,
        // so records it got but had not committed must come again (and nothing else may).
        await("c3 consumed part of the last phase and has not committed its last poll", 30_000,
                () -> ledger.deliveredFrom("c3", 2 * third) >= Math.min(1000, third / 10)
                        && ledger.uncommitted("c3") > 0, ledger::state);
        child.destroyForcibly(); // SIGKILL: no LeaveGroup, no final commit
        long killedAt = System.nanoTime();
        if (!child.waitFor(10, TimeUnit.SECONDS)) error("child did not die within 10 s of SIGKILL");
        reader.join(10_000);
        ledger.killed("c3");
        phase("c3_killed");
        Map<String, Object> atKill = new LinkedHashMap<>();
        synchronized (ledger) {
            MemberView c3 = ledger.m("c3");
            atKill.put("owned", new ArrayList<>(c3.owned));
            atKill.put("last_commit", new TreeMap<>(c3.lastCommit));
            atKill.put("last_delivered", new TreeMap<>(c3.lastOffset));
            atKill.put("uncommitted", ledger.uncommitted("c3"));
        }
        info.put("c3_at_kill", atKill);
        List<Integer> orphaned = new ArrayList<>(ledger.owned("c3"));
        await("c2 took over c3's partitions " + orphaned, Math.max(30_000, 3L * sessionTimeoutMs),
                () -> ledger.owned("c2").size() == partitions, ledger::state);
        long takeoverMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - killedAt);
        info.put("takeover_ms", takeoverMs);
        if (takeoverMs < sessionTimeoutMs - 3000) { // 3000: heartbeat.interval.ms
            error("c2 got c3's partitions " + takeoverMs + " ms after the kill, before c3's session ("
                    + sessionTimeoutMs + " ms) could expire");
        }
        phase("c2_took_over");
        sender.join(Math.min(30_000, remainingMs()));
        awaitAcked(ledger, messages);
        awaitCommitted(ledger, messages, 30_000);
        phase("all_committed");
        synchronized (ledger) {
            info.put("takeovers", new TreeMap<>(ledger.takeovers));
        }

        Worker c2 = workers.get(1);
        c2.stop = true;
        c2.thread.join(Math.min(35_000, remainingMs()));
        phase("c2_closed");
        checkGroupOffsets(ledger);
        ConsumerGroupDescription d = describeGroup();
        if (d != null && !d.members().isEmpty()) {
            error("group still has members after all closed or died: " + d.members());
        }
        Map<String, Integer> redelivered = ledger.verify(messages);
        info.put("redelivered", redelivered);
        for (Map.Entry<String, Integer> e : redelivered.entrySet()) {
            if (!e.getKey().equals("c3")) {
                error(e.getValue() + " records first consumed by " + e.getKey() + " were consumed again");
            }
        }
    }

    void cooperative(Ledger ledger, KafkaProducer<String, String> producer, List<Worker> workers)
            throws Exception {
        int n = 6_000;
        send(producer, ledger, 0, n / 2, 0, 0);
        awaitAcked(ledger, n / 2);
        for (String w : Arrays.asList("a1", "a2")) {
            workers.add(new Worker(w, consumerProps(w, COOPERATIVE, null), ledger).start());
        }
        List<String> two = Arrays.asList("a1", "a2");
        await("a1, a2 split the partitions 3/3", 45_000, () -> ledger.split(two, partitions / 2), ledger::state);
        awaitCommitted(ledger, n / 2, 30_000);
        phase("split_2");
        Map<String, TreeSet<Integer>> before = new LinkedHashMap<>();
        Map<String, Integer> mark = new LinkedHashMap<>();
        for (String w : two) {
            before.put(w, ledger.owned(w));
            mark.put(w, ledger.events(w).size());
        }
        info.put("assignment_before", ledger.assignment(two));

        Thread sender = sendInBackground(producer, ledger, n / 2, n, 300, 100); // ~1 s of records
        workers.add(new Worker("a3", consumerProps("a3", COOPERATIVE, null), ledger).start());
        List<String> three = Arrays.asList("a1", "a2", "a3");
        await("a1, a2, a3 split the partitions 2/2/2", 45_000, () -> ledger.split(three, partitions / 3),
                ledger::state);
        phase("split_3");
        info.put("assignment_after", ledger.assignment(three));
        sender.join(Math.min(30_000, remainingMs()));
        awaitAcked(ledger, n);
        awaitCommitted(ledger, n, 30_000);
        phase("all_committed");

        Map<String, Object> rebalance = new LinkedHashMap<>();
        Set<Integer> moved = new TreeSet<>();
        for (String w : two) {
            List<String> ev = ledger.events(w);
            List<String> since = ev.subList(mark.get(w), ev.size());
            rebalance.put(w, since);
            TreeSet<Integer> after = ledger.owned(w);
            TreeSet<Integer> revoked = new TreeSet<>(before.get(w));
            revoked.removeAll(after);
            moved.addAll(revoked);
            if (!before.get(w).containsAll(after)) {
                error(w + " gained partitions: before " + before.get(w) + ", after " + after);
            }
            if (revoked.size() != 1) {
                error(w + " gave up " + revoked + "; expected exactly one partition to move to a3");
            }
            for (String e : since) {
                // Cooperative: revocations name only partitions that move; assignments add nothing.
                if (e.startsWith("revoked ")) {
                    if (!e.equals("revoked " + revoked)) {
                        error(w + " revoked more than the partitions that moved " + revoked + ": " + e);
                    }
                } else if (e.startsWith("lost ")) {
                    error(w + " lost partitions: " + e);
                } else if (e.startsWith("gen ") && !e.endsWith("assigned []")) {
                    error(w + " was assigned partitions while a3 joined: " + e);
                }
            }
        }
        rebalance.put("a3", ledger.events("a3"));
        info.put("rebalance_events", rebalance);
        TreeSet<Integer> a3 = ledger.owned("a3");
        if (!a3.equals(moved)) {
            error("a3 owns " + a3 + " but the partitions revoked from a1/a2 were " + moved);
        }
        for (String e : ledger.events("a3")) {
            if (e.startsWith("revoked ") || e.startsWith("lost ")) error("a3 " + e);
        }
        Map<String, Integer> redelivered = ledger.verify(n);
        info.put("redelivered", redelivered);
        if (!redelivered.isEmpty()) error("records consumed more than once: " + redelivered);
    }

    void staticMembership(Ledger ledger, KafkaProducer<String, String> producer, List<Worker> workers,
            String assignor) throws Exception {
        int n = 6_000;
        List<String> names = Arrays.asList("s1", "s2", "s3");
        Map<String, Worker> running = new LinkedHashMap<>();
        for (String w : names) {
            if (assignor != null && w.equals("s3")) {
                // s3 joins a settled group of two: the group rebalances again, so every
                // member's subscription now carries the partitions it owns and its generation,
                // bytes a restarted incarnation cannot repeat.
                await("s1, s2 split the partitions 3/3", 45_000,
                        () -> ledger.split(Arrays.asList("s1", "s2"), partitions / 2), ledger::state);
            }
            Worker worker = new Worker(w, consumerProps(w, assignor, "static-" + w), ledger).start();
            workers.add(worker);
            running.put(w, worker);
        }
        await("s1, s2, s3 split the partitions 2/2/2", 45_000, () -> ledger.split(names, partitions / 3),
                ledger::state);
        Map<String, Object> before = ledger.assignment(names);
        info.put("assignment_before", before);
        int generation = ledger.generationOf("s1");
        info.put("generation", generation);
        phase("split_3");
        send(producer, ledger, 0, n / 2, 0, 0);
        awaitAcked(ledger, n / 2);
        awaitCommitted(ledger, n / 2, 30_000);
        phase("half_committed");

        // Restart each member in turn (so the group leader is among them): close() -- a static
        // member sends no LeaveGroup -- then a new consumer with the same group.instance.id.
        Map<String, Integer> mark = new LinkedHashMap<>();
        for (String w : names) mark.put(w, ledger.events(w).size());
        Map<String, Object> restarts = new LinkedHashMap<>();
        long lastClosedAt = System.nanoTime();
        for (String w : names) {
            TreeSet<Integer> parts = ledger.owned(w);
            Worker old = running.remove(w);
            old.stop = true;
            old.thread.join(Math.min(35_000, remainingMs()));
            if (old.thread.isAlive()) {
                error(w + " close() did not return within 35 s");
                throw new Abort("close");
            }
            lastClosedAt = System.nanoTime();
            String fresh = w + "r";
            Worker worker = new Worker(fresh, consumerProps(fresh, assignor, "static-" + w), ledger).start();
            workers.add(worker);
            running.put(fresh, worker);
            await("restarted " + w + " (" + fresh + ") got its partitions " + parts + " back", 30_000,
                    () -> ledger.owned(fresh).equals(parts), ledger::state);
            long backMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - lastClosedAt);
            Map<String, Object> r = new LinkedHashMap<>();
            r.put("partitions", new ArrayList<>(parts));
            r.put("ms", backMs);
            restarts.put("static-" + w, r);
            if (backMs >= sessionTimeoutMs) {
                error(fresh + " got its partitions back only after " + backMs + " ms, not within the session timeout");
            }
            phase(fresh + "_assigned");
        }
        info.put("restarts", restarts);
        send(producer, ledger, n / 2, n, 0, 0);
        awaitAcked(ledger, n);
        awaitCommitted(ledger, n, 30_000);
        // Watch past the last replaced member's session timeout plus a heartbeat interval: an
        // expiry or a rebalance would have reached the running members by then.
        long watchUntil = lastClosedAt + TimeUnit.MILLISECONDS.toNanos(sessionTimeoutMs + 3_500L);
        while (System.nanoTime() < Math.min(watchUntil, deadline)) Thread.sleep(50);
        phase("watched");

        // Each original member saw only its own close (eager: it revokes its partitions); each
        // restarted one saw only getting the same partitions back in the same generation.
        Map<String, Object> seen = new LinkedHashMap<>();
        for (String w : names) {
            List<String> ev = ledger.events(w);
            List<String> since = new ArrayList<>(ev.subList(mark.get(w), ev.size()));
            seen.put(w, since);
            List<String> want = Collections.singletonList("revoked " + before.get(w));
            if (!since.equals(want)) error(w + " saw " + since + " while the members restarted; expected " + want);
            String fresh = w + "r";
            List<String> evr = ledger.events(fresh);
            seen.put(fresh, evr);
            List<String> wantr = Collections.singletonList("gen " + generation + " assigned " + before.get(w));
            if (!evr.equals(wantr)) error(fresh + " saw " + evr + "; expected " + wantr);
            if (ledger.generationOf(fresh) != generation) {
                error(fresh + " is at generation " + ledger.generationOf(fresh) + ", not " + generation);
            }
        }
        info.put("events_during_restart", seen);
        ConsumerGroupDescription d = describeGroup();
        if (d != null) {
            Set<String> ids = new TreeSet<>();
            for (MemberDescription md : d.members()) ids.add(md.groupInstanceId().orElse("(none)"));
            if (!ids.equals(new TreeSet<>(Arrays.asList("static-s1", "static-s2", "static-s3")))) {
                error("DescribeGroups shows instance ids " + ids);
            }
            if (!"STABLE".equalsIgnoreCase(String.valueOf(d.groupState()))) {
                error("DescribeGroups shows state " + d.groupState());
            }
        }
        Map<String, Integer> redelivered = ledger.verify(n);
        info.put("redelivered", redelivered);
        if (!redelivered.isEmpty()) error("records consumed more than once: " + redelivered);
    }

    // ---------------------------------------------------------------- output

    static String clientVersion() {
        try (java.io.InputStream in = KafkaProducer.class.getResourceAsStream("/kafka/kafka-version.properties")) {
            Properties p = new Properties();
            if (in != null) p.load(in);
            return p.getProperty("version", "unknown");
        } catch (java.io.IOException e) {
            return "unknown";
        }
    }

    static String toJson(Object o) {
        if (o == null) return "null";
        if (o instanceof Boolean || o instanceof Number) return o.toString();
        if (o instanceof Optional) return toJson(((Optional<?>) o).orElse(null));
        if (o instanceof Map) {
            StringBuilder sb = new StringBuilder("{");
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) {
                if (!first) sb.append(',');
                first = false;
                sb.append(toJson(String.valueOf(e.getKey()))).append(':').append(toJson(e.getValue()));
            }
            return sb.append('}').toString();
        }
        if (o instanceof Collection) {
            StringBuilder sb = new StringBuilder("[");
            boolean first = true;
            for (Object x : (Collection<?>) o) {
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
