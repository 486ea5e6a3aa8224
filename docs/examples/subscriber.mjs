// Print every message of the scorer's scores topic, one JSON line each, from the beginning.
//
//   npm install --prefix docs/examples --no-save kafkajs@2   # once: node_modules/ beside this file
//   . ./.mmc.env                                             # written by `mmc stack --env-file .mmc.env`
//   node docs/examples/subscriber.mjs
//
// Environment (the variables the service reads):
//   MMC_KAFKA_BOOTSTRAP   bootstrap servers, host:port[,host:port]   (default 127.0.0.1:9092)
//   MMC_TOPIC_PREFIX      prefix of every topic name                  (default mmc.)
//   MMC_SUBSCRIBER_GROUP  this subscriber's consumer group            (default mmc-subscriber-example)
// The message shapes are in the AsyncAPI document: `mmc web` serves it at /api/asyncapi.json,
// and streams/messages/asyncapi.json ships it. A plaintext broker is assumed; for TLS or SASL
// (MMC_KAFKA_SECURITY_PROTOCOL, MMC_KAFKA_SASL_*) add kafkajs's `ssl` and `sasl` options.
import { Kafka, logLevel } from 'kafkajs';

const brokers = (process.env.MMC_KAFKA_BOOTSTRAP || '127.0.0.1:9092').split(',');
const topic = `${process.env.MMC_TOPIC_PREFIX ?? 'mmc.'}scores`;
const groupId = process.env.MMC_SUBSCRIBER_GROUP || 'mmc-subscriber-example';

// kafkajs logs on stdout by default; its log goes to stderr so stdout carries the messages only.
const logCreator = () => ({ label, namespace, log }) => console.error(`${label} [${namespace}] ${log.message}`);
const kafka = new Kafka({ clientId: 'mmc-subscriber-example', brokers, logLevel: logLevel.WARN, logCreator });
// The service's own group timeouts (MMC_BROKER_SESSION_TIMEOUT and friends): with kafkajs's
// defaults (30 s session, 60 s rebalance) the embedded broker takes 15 s to let a consumer join.
const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, rebalanceTimeout: 10000, heartbeatInterval: 1000 });

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    await consumer.disconnect();
    process.exit(0);
  });
}

await consumer.connect();
await consumer.subscribe({ topic, fromBeginning: true });
console.error(`subscribed to ${topic} as ${groupId} on ${brokers.join(',')}`);
await consumer.run({
  eachMessage: async ({ topic, partition, message }) => {
    // A score: {round, day, final, model, stake, corr, mmc, contribution, corr_w_mm, payout, percentiles, ...}
    const score = JSON.parse(message.value.toString('utf8'));
    console.log(JSON.stringify({ topic, partition, offset: message.offset, key: message.key?.toString('utf8') ?? null, score }));
  },
});
