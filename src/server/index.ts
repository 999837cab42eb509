// tandem's OpenAI-compatible HTTP server (the package's "tandem-llm/server" export).
export { startServer, type ServerOptions, type TandemServer } from './http.js';
export { RequestError } from './openai.js';
