# shellcheck shell=bash
# Sourced by services/kafka/{setup,node}: where the Kafka jars live on this machine.
#
#   KAFKA_DIR      this folder (services/kafka)
#   KAFKA_VERSION  <kafka.version> from pom.xml
#   KAFKA_HOME     ${ESHOP_SERVICES_HOME:-/opt/eshop-services}/kafka-<version>
#   KAFKA_LIBS     $KAFKA_HOME/libs (every runtime jar; use as -cp "$KAFKA_LIBS/*")
#   KAFKA_MARKER   $KAFKA_HOME/.installed (holds the sha256 of the pom.xml it was installed from)
#   JAVA           java binary (JAVA_HOME/bin/java when JAVA_HOME is set)

KAFKA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_DIR/pom.xml" | head -n1)"
if [[ -z "$KAFKA_VERSION" ]]; then
  echo "services/kafka: cannot read <kafka.version> from $KAFKA_DIR/pom.xml" >&2
  exit 1
fi
KAFKA_HOME="${ESHOP_SERVICES_HOME:-/opt/eshop-services}/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_MARKER="$KAFKA_HOME/.installed"
if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA=java
fi

kafka_pom_sum() { sha256sum "$KAFKA_DIR/pom.xml" | cut -d' ' -f1; }

# True when the jars for this pom.xml are in place.
kafka_installed() {
  [[ -f "$KAFKA_MARKER" && -d "$KAFKA_LIBS" ]] && [[ "$(cat "$KAFKA_MARKER")" == "$(kafka_pom_sum)" ]]
}

# Run KafkaReady.java (compiled once per source version into $KAFKA_HOME, so a check costs
# one plain JVM start): kafka_ready BOOTSTRAP [BROKERS] [TIMEOUT_SECONDS]
kafka_ready() {
  local sum classes
  sum="$(sha256sum "$KAFKA_DIR/KafkaReady.java" | cut -c1-12)"
  classes="$KAFKA_HOME/ready-$sum"
  if [[ ! -f "$classes/KafkaReady.class" ]]; then
    local javac=javac
    [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/javac" ]] && javac="$JAVA_HOME/bin/javac"
    if command -v "$javac" >/dev/null && "$javac" -nowarn -d "$classes.tmp.$$" -cp "$KAFKA_LIBS/*" \
        "$KAFKA_DIR/KafkaReady.java" 2>/dev/null; then
      rm -rf "$classes"; mv "$classes.tmp.$$" "$classes" 2>/dev/null || rm -rf "$classes.tmp.$$"
    else
      rm -rf "$classes.tmp.$$"
      # No javac (JRE only): the source launcher compiles it in memory on every call.
      "$JAVA" -Xmx128m -XX:+UseSerialGC -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.properties" \
        -cp "$KAFKA_LIBS/*" "$KAFKA_DIR/KafkaReady.java" "$@"
      return
    fi
  fi
  "$JAVA" -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto \
    -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.properties" \
    -cp "$classes:$KAFKA_LIBS/*" KafkaReady "$@"
}

# CDS archive of Kafka's classes (see kafka.classlist), one per Java runtime + install.
# Sets the array KAFKA_CDS_OPTS to the JVM options that use it, building it first if needed
# (~10 s, once; under a lock so parallel nodes build it once). Empty if it can't be built,
# and KAFKA_CDS=0 turns it off. Only valid for java ... -cp "$KAFKA_LIBS/*" (same class path).
kafka_cds() {
  KAFKA_CDS_OPTS=()
  [[ "${KAFKA_CDS:-1}" != 0 ]] || return 0
  local id jsa
  id="$( { "$JAVA" -version 2>&1; cat "$KAFKA_MARKER" 2>/dev/null; sha256sum < "$KAFKA_DIR/kafka.classlist"; } \
        | sha256sum | cut -c1-12)"
  jsa="$KAFKA_HOME/cds/kafka-$id.jsa"
  if [[ ! -f "$jsa" && ! -f "$jsa.failed" ]]; then
    mkdir -p "$KAFKA_HOME/cds" || return 0
    (
      flock 9
      if [[ ! -f "$jsa" && ! -f "$jsa.failed" ]]; then
        if "$JAVA" -Xshare:dump -XX:SharedClassListFile="$KAFKA_DIR/kafka.classlist" \
            -XX:SharedArchiveFile="$jsa.tmp.$$" -cp "$KAFKA_LIBS/*" > "$jsa.log" 2>&1; then
          mv "$jsa.tmp.$$" "$jsa"
        else
          rm -f "$jsa.tmp.$$"; touch "$jsa.failed"
          echo "services/kafka: could not build the CDS archive (see $jsa.log); running without it" >&2
        fi
      fi
    ) 9>"$KAFKA_HOME/cds/.lock" || true
  fi
  # shellcheck disable=SC2034  # used by the scripts that source this file
  if [[ -f "$jsa" ]]; then KAFKA_CDS_OPTS=(-XX:SharedArchiveFile="$jsa" -Xshare:auto); fi
  return 0
}
