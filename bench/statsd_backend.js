/*
 * A StatsD backend for bench/bench_statsd.py: what each flush actually delivers, one JSON line per flush.
 *
 * The benchmark needs the counter totals StatsD would hand to a time-series database, not the
 * daemon's internal view; the stock console backend prints a Node inspect dump that is awkward to
 * parse, and the npm InfluxDB backend speaks a long-gone InfluxDB API. So this file appends, for
 * every flush, the sum of all user counters (StatsD's own "statsd.*" counters apart), how many
 * keys were non-zero, and the daemon's own packet and line counters, to the file named by
 * `jsonl.path` in the daemon's config:
 *
 *   {"ts": 1764100000, "total": 99000, "keys": 15, "packets": 99000, "metrics": 99000, "bad": 0}
 *
 * Loaded by the daemon through `backends: ["/abs/path/statsd_backend.js"]`.
 */
'use strict';

const fs = require('fs');

function JsonLinesBackend(config, emitter) {
  const options = config.jsonl || {};
  const prefix = (config.prefixStats !== undefined ? config.prefixStats : 'statsd') + '.';
  this.path = options.path;
  this.prefix = prefix;
  emitter.on('flush', (timestamp, metrics) => this.flush(timestamp, metrics));
}

JsonLinesBackend.prototype.flush = function (timestamp, metrics) {
  const counters = metrics.counters || {};
  let total = 0;
  let keys = 0;
  for (const key in counters) {
    if (key.startsWith(this.prefix)) {
      continue;
    }
    const value = counters[key];
    if (value) {
      total += value;
      keys += 1;
    }
  }
  const line = {
    ts: timestamp,
    total: total,
    keys: keys,
    packets: counters[this.prefix + 'packets_received'] || 0,
    metrics: counters[this.prefix + 'metrics_received'] || 0,
    bad: counters[this.prefix + 'bad_lines_seen'] || 0,
  };
  // Synchronous on purpose: one short line per flush, and the file is complete once a flush returns.
  fs.appendFileSync(this.path, JSON.stringify(line) + '\n');
};

exports.init = function (startupTime, config, events) {
  if (!config.jsonl || !config.jsonl.path) {
    return false;
  }
  new JsonLinesBackend(config, events);
  return true;
};
