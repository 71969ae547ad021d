// An upstream system written in another language: asks a question by producing a QueryRequested
// event (protobuf, from the repository's .proto files) to Kafka and reads the answer from its reply
// topic. Prints one JSON line: the answer or the failure. Used by tests/e2e/test_query_flow.py.
//
// usage: node upstream.mjs BOOTSTRAP TENANT QUESTION REPLY_TOPIC TIMEOUT_MS
import { randomUUID } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";
import kafkajs from "kafkajs";
import protobuf from "protobufjs";

const { Kafka, logLevel } = kafkajs;
const [bootstrap, tenant, question, replyTopic, timeoutMs] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = path.resolve(here, "../../../proto");

const root = new protobuf.Root();
root.resolvePath = (_origin, target) => (target.startsWith("google/") ? target : path.join(protoRoot, target));
root.loadSync("llmops/query/v1/events.proto", { keepCase: false });
const QueryRequested = root.lookupType("llmops.query.v1.QueryRequested");
const replyTypes = Object.fromEntries(
  ["QueryAnswered", "QueryFailed", "GenerationChunk"].map((n) => [
    `llmops.query.v1.${n}`,
    root.lookupType(`llmops.query.v1.${n}`),
  ]),
);

const nowMs = Date.now();
const timestamp = (ms) => ({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 });
const correlationId = randomUUID();
const request = QueryRequested.create({
  meta: {
    eventId: randomUUID(),
    correlationId,
    tenantId: tenant,
    occurredAt: timestamp(nowMs),
    producer: "node-upstream",
    schemaVersion: 1,
  },
  question,
  replyTopic,
  deadline: timestamp(nowMs + Number(timeoutMs)),
});

const kafka = new Kafka({ clientId: "node-upstream", brokers: [bootstrap], logLevel: logLevel.ERROR });
const consumer = kafka.consumer({ groupId: `node-upstream-${randomUUID()}` });
const producer = kafka.producer();

const done = (result, code = 0) => {
  process.stdout.write(JSON.stringify(result) + "\n");
  Promise.allSettled([consumer.disconnect(), producer.disconnect()]).then(() => process.exit(code));
};
setTimeout(() => done({ error: `no reply within ${timeoutMs} ms`, correlationId }, 2), Number(timeoutMs) + 5000);

await consumer.connect();
await consumer.subscribe({ topic: replyTopic, fromBeginning: true });
await consumer.run({
  eachMessage: async ({ message }) => {
    if (message.key?.toString() !== correlationId) return; // the contract: replies are keyed by correlation id
    const type = replyTypes[message.headers["event-type"]?.toString()];
    if (!type) return;
    const reply = type.toObject(type.decode(message.value), { longs: Number, enums: String, defaults: true });
    if (reply.meta.correlationId !== correlationId || type.name === "GenerationChunk") return;
    done({ type: type.name, correlationId, ...reply });
  },
});
await producer.connect();
await producer.send({
  topic: "llmops.query.requested.v1",
  acks: -1,
  messages: [
    {
      key: correlationId,
      value: Buffer.from(QueryRequested.encode(request).finish()),
      headers: { "content-type": "application/x-protobuf", "event-type": "llmops.query.v1.QueryRequested" },
    },
  ],
});
