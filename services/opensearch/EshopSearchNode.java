/*
 * eshop's local search engine: the real OpenSearch 2.19 engine, from the jars
 * that Maven Central publishes, run as one embedded node. The distribution's
 * launcher wants its own layout (bin/, lib/, modules/, a bundled JDK), so this
 * starts org.opensearch.node.Node directly with the distribution modules that
 * eshop needs given as classpath plugins.
 *
 * Run as a single source file (no javac step), as services/opensearch/setup does:
 *
 *   java -Xms512m -Xmx512m -cp '<libs>/*' EshopSearchNode.java <run-dir> <config-dir> [key=value ...]
 *
 *   <run-dir>     path.home; data in <run-dir>/data, logs in <run-dir>/logs
 *   <config-dir>  holds log4j2.properties (services/opensearch/config)
 *   key=value     extra node settings, applied last (e.g. http.port=9201)
 *
 * Listens on 127.0.0.1 only: HTTP 9200, transport 9300. SIGTERM (or SIGINT)
 * closes the node cleanly: shards flushed, ports released, log flushed.
 */

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.apache.logging.log4j.core.LoggerContext;
import org.apache.logging.log4j.core.config.Configurator;
import org.opensearch.Version;
import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

public class EshopSearchNode {

    /** The distribution modules eshop needs, loaded from the classpath. */
    static final List<Class<? extends Plugin>> PLUGINS = List.of(
        Netty4Plugin.class,          // transport-netty4: HTTP on 9200, transport on 9300
        CommonAnalysisPlugin.class   // analysis-common: the usual analyzers and filters
    );

    /** Node's constructor with classpath plugins is protected. */
    static final class EmbeddedNode extends Node {
        EmbeddedNode(Environment environment, List<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: java -cp '<libs>/*' EshopSearchNode.java <run-dir> <config-dir> [key=value ...]");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath().normalize();
        Path config = Path.of(args[1]).toAbsolutePath().normalize();
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));

        Settings.Builder builder = Settings.builder()
            .put("cluster.name", "eshop-dev")
            .put("node.name", "eshop-dev-1")
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", "9200")
            .put("transport.port", "9300")
            // A nearly full dev disk must not turn the indices read-only.
            .put("cluster.routing.allocation.disk.threshold_enabled", "false");
        for (int i = 2; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            if (eq <= 0) {
                System.err.println("not a key=value setting: " + args[i]);
                System.exit(2);
            }
            builder.put(args[i].substring(0, eq), args[i].substring(eq + 1));
        }
        Settings settings = builder.build();
        Environment environment = new Environment(settings, config);

        // OpenSearch's own logging set-up: <config>/log4j2.properties, with
        // the logs in path.logs; stdout and stderr are sent to the log too.
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(settings.get("node.name"));
        LogConfigurator.configure(environment);
        Logger log = LogManager.getLogger(EshopSearchNode.class);
        log.info("starting OpenSearch {} (Java {}, heap max {} MB) in {}",
            Version.CURRENT, Runtime.version(), Runtime.getRuntime().maxMemory() >> 20, home);

        Node node = new EmbeddedNode(environment, PLUGINS);
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            log.info("stopping: closing the node");
            try {
                node.close();
                if (!node.awaitClose(30, TimeUnit.SECONDS)) {
                    log.warn("the node did not close within 30 s");
                }
                log.info("stopped");
            } catch (Exception e) {
                log.error("closing the node failed", e);
            } finally {
                closed.countDown();
                // log4j's own shutdown hook is off (-Dlog4j.shutdownHookEnabled=false)
                // so that the lines above are written: flush and stop it last.
                Configurator.shutdown((LoggerContext) LogManager.getContext(false));
            }
        }, "eshop-search-shutdown"));

        try {
            node.start();
        } catch (Throwable e) {
            log.error("the node failed to start", e);
            System.exit(1); // the shutdown hook closes what was started
        }
        log.info("ready: http://127.0.0.1:{}", settings.get("http.port"));
        // The node's threads are daemons: keep the JVM up until it is closed.
        closed.await();
    }
}
