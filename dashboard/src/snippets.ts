// Ready-to-copy ways to call a server, with the real gateway URL filled in.

export function openaiSnippet(gatewayUrl: string, model: string): string {
  return [
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url="${gatewayUrl}/v1", api_key=TOKEN)`,
    "for chunk in client.chat.completions.create(",
    `    model="${model}",`,
    '    messages=[{"role": "user", "content": "Hello"}],',
    "    stream=True,",
    "):",
    '    print(chunk.choices[0].delta.content or "", end="")',
  ].join("\n");
}

export function curlSnippet(gatewayUrl: string, model: string): string {
  const body = JSON.stringify({ model, messages: [{ role: "user", content: "Hello" }] });
  return [
    `curl ${gatewayUrl}/v1/chat/completions \\`,
    '  -H "Authorization: Bearer $TOKEN" \\',
    "  -H 'Content-Type: application/json' \\",
    `  -d '${body}'`,
  ].join("\n");
}
