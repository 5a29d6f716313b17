// The Node openai SDK as a user writes it, from the compatibility suite (tests/test_compat_node.py).
// Node 20's fetch ignores HTTPS_PROXY, so the SDK reaches the gateway one of two ways:
//   node openai_node.cjs proxy     an undici ProxyAgent (HTTPS_PROXY) as fetchOptions.dispatcher
//   node openai_node.cjs base-url  baseURL at the gateway's reverse listener (POUCH_BASE_URL)
// The key is OPENAI_API_KEY and the CA NODE_EXTRA_CA_CERTS, both from `pouch env`. Prints the
// reply, the model and the usage as one JSON line.
const OpenAI = require("openai");
const { ProxyAgent } = require("undici");

function client(how) {
  if (how === "proxy") {
    return new OpenAI({ maxRetries: 0, fetchOptions: { dispatcher: new ProxyAgent(process.env.HTTPS_PROXY) } });
  }
  if (how === "base-url") {
    return new OpenAI({ maxRetries: 0, baseURL: process.env.POUCH_BASE_URL });
  }
  throw new Error(`usage: node openai_node.cjs proxy|base-url (got ${how})`);
}

async function main() {
  const reply = await client(process.argv[2]).chat.completions.create({
    model: process.argv[3] || "gpt-4o-mini",
    messages: [{ role: "user", content: "say hi" }],
  });
  console.log(JSON.stringify({ text: reply.choices[0].message.content, model: reply.model, usage: reply.usage }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
