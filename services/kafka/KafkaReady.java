// Waits until a Kafka cluster really serves clients: the bootstrap broker answers
// DescribeCluster with at least N unfenced brokers and lists topics.
// One JVM, polling every 200 ms, so the whole wait costs one JVM start.
//
//   java -cp "$KAFKA_LIBS/*" services/kafka/KafkaReady.java BOOTSTRAP [BROKERS] [TIMEOUT_SECONDS]
//
// Exit 0 when ready, 1 when the deadline passed (last error on stderr).
import java.util.Collection;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.common.Node;

public class KafkaReady {
    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: KafkaReady BOOTSTRAP [BROKERS] [TIMEOUT_SECONDS]");
            System.exit(2);
        }
        String bootstrap = args[0];
        int brokers = args.length > 1 ? Integer.parseInt(args[1]) : 1;
        long timeoutMs = (args.length > 2 ? Long.parseLong(args[2]) : 120) * 1000L;
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);

        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "2000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, "100");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "300");
        p.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "100");
        p.put(AdminClientConfig.RETRY_BACKOFF_MAX_MS_CONFIG, "300");
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "eshop-kafka-ready");

        String last = "no answer yet";
        try (Admin admin = Admin.create(p)) {
            while (true) {
                try {
                    DescribeClusterResult cluster = admin.describeCluster();
                    Collection<Node> nodes = cluster.nodes().get(3, TimeUnit.SECONDS);
                    admin.listTopics().names().get(3, TimeUnit.SECONDS);
                    if (nodes.size() >= brokers) {
                        System.out.println("kafka ready: " + nodes.size() + " broker(s), cluster "
                                + cluster.clusterId().get(3, TimeUnit.SECONDS));
                        System.exit(0);
                    }
                    last = nodes.size() + " of " + brokers + " broker(s) up";
                } catch (Exception e) {
                    Throwable c = e.getCause() != null ? e.getCause() : e;
                    last = c.getClass().getSimpleName() + ": " + c.getMessage();
                }
                if (System.nanoTime() - deadline > 0) {
                    System.err.println("kafka not ready at " + bootstrap + " after "
                            + timeoutMs / 1000 + " s: " + last);
                    System.exit(1);
                }
                Thread.sleep(200);
            }
        }
    }
}
