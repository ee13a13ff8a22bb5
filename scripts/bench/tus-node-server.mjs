// The @tus/server peer: a plain Node HTTP server handing every request to @tus/server with a
// FileStore, as its README's standalone example does.
//
//   node tus-node-server.mjs PORT DIRECTORY
//
// Listens on 127.0.0.1 only. The FileStore writes each PATCH body to the upload's file as it
// streams in and does not fsync.
import http from 'node:http';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const [port, directory] = process.argv.slice(2);
if (!port || !directory) {
  console.error('usage: node tus-node-server.mjs PORT DIRECTORY');
  process.exit(2);
}
const tus = new Server({ path: '/files', datastore: new FileStore({ directory }) });
http
  .createServer((req, res) => tus.handle(req, res))
  .listen(Number(port), '127.0.0.1', () => console.log(`@tus/server listening on 127.0.0.1:${port}`));
