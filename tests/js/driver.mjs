// Test driver: hosts many REAL pusher-js (Node build) and Laravel Echo clients in one process and lets
// tests/support/js_clients.py orchestrate them over JSON lines on stdin/stdout.
//
// This file never speaks the Pusher protocol itself: every frame on the wire is produced and parsed by
// pusher-js, and every auth request is pusher-js's own XHR to a real auth endpoint. The driver only
// calls the libraries' public API and reports what they emit.
//
// Wire format (one JSON object per line):
//   stdin : {"id": 7, "op": "subscribe", "args": {...}}
//   stdout: {"type": "ready", "versions": {...}}                       once, at start
//           {"type": "reply", "id": 7, "ok": true, "result": ...}
//           {"type": "reply", "id": 7, "ok": false, "error": {"message": "...", "data": ...}}
//           {"type": "record", "seq": 12, "time": 1732650000.123, "cid": "a", "source": "channel",
//            "event": "my-event", "channel": "my-channel", "data": ..., "user_id": null}
// stdout carries only these lines; everything else (library logs, crashes) goes to stderr.

import { readFileSync } from 'node:fs';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import Echo from 'laravel-echo';
import Pusher from 'pusher-js';
import { WebSocket as NodeWebSocket } from 'ws';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const DEBUG = process.env.HUB_JS_DEBUG === '1';

// Keep stdout for the protocol: route every console method libraries might use to stderr.
for (const name of ['log', 'info', 'debug', 'warn', 'error']) {
  console[name] = (...args) => process.stderr.write(`[console.${name}] ${args.map(String).join(' ')}\n`);
}
// pusher-js logs only when Pusher.log is set; its debug output is one line per frame, so only on demand.
if (DEBUG) {
  Pusher.log = (message) => process.stderr.write(`[pusher-js] ${message}\n`);
}
// pusher-js's Node build speaks WebSocket through faye-websocket, which offers no extensions. With
// HUB_JS_WEBSOCKET=ws it uses Node's `ws` instead (same browser-style API), which offers permessage-deflate
// as browsers do, so tests can check pusher-js receiving compressed frames. pusher-js itself is unchanged.
if (process.env.HUB_JS_WEBSOCKET === 'ws') {
  Pusher.Runtime.createWebSocket = (url) => new NodeWebSocket(url);
}
process.on('uncaughtException', (err) => {
  process.stderr.write(`[driver] uncaught exception: ${err && err.stack ? err.stack : err}\n`);
});
process.on('unhandledRejection', (err) => {
  process.stderr.write(`[driver] unhandled rejection: ${err && err.stack ? err.stack : err}\n`);
});

function packageVersion(name) {
  try {
    return JSON.parse(readFileSync(`${HERE}node_modules/${name}/package.json`, 'utf8')).version;
  } catch {
    return null;
  }
}

function emit(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

// Convert whatever a library hands to a callback (Members objects, Errors, faye close events, cycles)
// into plain JSON so the Python side sees exactly the fields the library exposed.
function plain(value, seen = new WeakSet(), depth = 0) {
  if (value === undefined || value === null) return null;
  const kind = typeof value;
  if (kind === 'string' || kind === 'number' || kind === 'boolean') return value;
  if (kind === 'bigint') return value.toString();
  if (kind === 'function' || kind === 'symbol') return undefined;
  if (value instanceof Error) return { name: value.name, message: value.message };
  if (depth > 10) return '[too deep]';
  if (seen.has(value)) return '[cycle]';
  seen.add(value);
  let result;
  if (Array.isArray(value)) {
    result = value.map((item) => {
      const converted = plain(item, seen, depth + 1);
      return converted === undefined ? null : converted;
    });
  } else if (ArrayBuffer.isView(value)) {
    result = Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
  } else {
    result = {};
    for (const [key, item] of Object.entries(value)) {
      const converted = plain(item, seen, depth + 1);
      if (converted !== undefined) result[key] = converted;
    }
  }
  // Shared (non-cyclic) references may legitimately appear twice, e.g. members.me and members.members.
  seen.delete(value);
  return result;
}

let seq = 0;
function record(cid, source, event, channel, data, userId = null) {
  seq += 1;
  emit({
    type: 'record',
    seq,
    time: Date.now() / 1000,
    cid,
    source,
    event,
    channel: channel ?? null,
    data: plain(data),
    user_id: userId ?? null,
  });
}

class DriverError extends Error {
  constructor(message, data = null) {
    super(message);
    this.data = data;
  }
}

/** Per-client state: the pusher-js instance, the optional Echo wrapping it, and the auth params it sends. */
const clients = new Map();

function getClient(cid) {
  const client = clients.get(cid);
  if (!client) throw new DriverError(`unknown client ${JSON.stringify(cid)}`);
  return client;
}

// Waits until `check(resolve, reject)` settles the promise, detaching every listener it registered
// (via `track`) and failing with the given message after timeoutMs.
function waitFor(timeoutMs, what, setup) {
  return new Promise((resolve, reject) => {
    const cleanups = [];
    let done = false;
    const finish = (fn, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      for (const cleanup of cleanups) {
        try {
          cleanup();
        } catch (err) {
          process.stderr.write(`[driver] cleanup failed: ${err}\n`);
        }
      }
      fn(value);
    };
    const timer = setTimeout(
      () => finish(reject, new DriverError(`timed out after ${timeoutMs} ms waiting for ${what()}`)),
      timeoutMs,
    );
    const track = (cleanup) => cleanups.push(cleanup);
    try {
      setup((value) => finish(resolve, value), (err) => finish(reject, err), track);
    } catch (err) {
      finish(reject, err);
    }
  });
}

function bindTracked(track, dispatcher, eventName, callback) {
  dispatcher.bind(eventName, callback);
  track(() => dispatcher.unbind(eventName, callback));
}

function lastErrorOf(client) {
  return client.lastError === undefined ? null : client.lastError;
}

// --- recorders ---------------------------------------------------------------------------------------

function attachConnectionRecorders(client) {
  const { cid, pusher } = client;
  const connection = pusher.connection;
  connection.bind('state_change', (states) => {
    record(cid, 'connection', 'state_change', null, states);
    if (states.current === 'connected') attachTransportRecorder(client);
  });
  connection.bind('error', (err) => {
    client.lastError = plain(err);
    record(cid, 'connection', 'error', null, err);
  });
  // Every decoded frame the server sent, with its top-level user_id: bind_global callbacks never see
  // user_id (pusher-js passes it only as metadata to named bindings), so tests read it here.
  connection.bind('message', (message) => {
    record(cid, 'message', message.event, message.channel, message.data, message.user_id);
  });
  pusher.user.bind_global((eventName, data) => record(cid, 'user', eventName, null, data));
  for (const name of ['online', 'offline']) {
    pusher.user.watchlist.bind(name, (data) => record(cid, 'watchlist', name, null, data));
  }
}

// pusher-js reports close codes only through `error` events and only for codes other than 1000/1001, so
// also observe the transport's own `closed` event (an internal object; observation only, best effort).
function attachTransportRecorder(client) {
  const transport = client.pusher.connection.connection && client.pusher.connection.connection.transport;
  if (!transport || client.recordedTransports.has(transport)) return;
  client.recordedTransports.add(transport);
  transport.bind('closed', (closeEvent) => {
    const data = closeEvent
      ? { code: closeEvent.code ?? null, reason: closeEvent.reason ?? null, wasClean: closeEvent.wasClean ?? null }
      : { code: null, reason: null, wasClean: null };
    client.lastClose = data;
    record(client.cid, 'transport', 'closed', null, data);
  });
}

function attachChannelRecorder(client, channel) {
  if (client.recordedChannels.has(channel)) return;
  client.recordedChannels.add(channel);
  channel.bind_global((eventName, data) => {
    // Presence success hands over the live Members object; record the same snapshot shape that
    // subscribe() and members() return instead of its internals.
    const payload = eventName === 'pusher:subscription_succeeded' && channel.members ? membersSnapshot(channel) : data;
    record(client.cid, 'channel', eventName, channel.name, payload);
  });
}

function membersSnapshot(channel) {
  const members = channel.members;
  const list = [];
  members.each((member) => list.push(member));
  return plain({ me: members.me, my_id: members.myID, count: members.count, members: list });
}

// --- options -----------------------------------------------------------------------------------------

function baseOptions(args) {
  const options = {
    cluster: 'mt1', // required by pusher-js even when wsHost is set; unused otherwise
    wsHost: args.host,
    wsPort: args.port,
    wssPort: args.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    // `disableStats` is deprecated in pusher-js 8 (it logs a warning); stats are off unless enableStats.
    enableStats: false,
  };
  if (args.activityTimeoutMs != null) options.activityTimeout = args.activityTimeoutMs;
  if (args.pongTimeoutMs != null) options.pongTimeout = args.pongTimeoutMs;
  return options;
}

function buildPusher(args, authParams, userAuthParams) {
  const options = baseOptions(args);
  // pusher-js copies these option objects shallowly, so `params` stays the very object we keep in
  // `client.authParams`; set_auth_params mutates it in place to change what later auth requests send.
  if (args.authUrl) options.channelAuthorization = { endpoint: args.authUrl, transport: 'ajax', params: authParams };
  if (args.userAuthUrl) {
    options.userAuthentication = { endpoint: args.userAuthUrl, transport: 'ajax', params: userAuthParams };
  }
  Object.assign(options, args.options || {});
  return { pusher: new Pusher(args.key, options), echo: null };
}

function buildEcho(args, authParams, userAuthParams) {
  // Configured the way a Laravel app's resources/js/echo.js does it; Echo passes its whole options
  // object to `new Pusher(key, options)`, so pusher-js takes the legacy authEndpoint/auth.params path.
  const options = {
    broadcaster: 'pusher',
    Pusher,
    key: args.key,
    ...baseOptions(args),
    auth: { headers: {}, params: authParams },
    userAuthentication: {
      endpoint: args.userAuthUrl || '/broadcasting/user-auth',
      transport: 'ajax',
      headers: {},
      params: userAuthParams,
    },
  };
  if (args.authUrl) options.authEndpoint = args.authUrl;
  Object.assign(options, args.options || {});
  const echo = new Echo(options);
  return { pusher: echo.connector.pusher, echo };
}

function waitConnected(client, timeoutMs) {
  const connection = client.pusher.connection;
  return waitFor(
    timeoutMs,
    () => `client ${client.cid} to connect (state ${connection.state}, last error ${JSON.stringify(lastErrorOf(client))})`,
    (resolve, reject, track) => {
      if (connection.state === 'connected') {
        resolve(connection.socket_id);
        return;
      }
      bindTracked(track, connection, 'state_change', ({ current }) => {
        if (current === 'connected') {
          resolve(connection.socket_id);
        } else if (current === 'failed' || current === 'disconnected') {
          // A refused handshake (e.g. 4001 unknown app key) ends in `disconnected` with an error event first.
          reject(new DriverError(`client ${client.cid} ended in state ${current}`, { state: current, error: lastErrorOf(client) }));
        }
      });
    },
  );
}

// --- operations --------------------------------------------------------------------------------------

const ops = {
  async connect(args) {
    const existing = clients.get(args.cid);
    if (existing && existing.pusher.connection.state !== 'disconnected') {
      throw new DriverError(`client ${args.cid} already exists`);
    }
    const authParams = { ...(args.authParams || {}) };
    const userAuthParams = { ...(args.userAuthParams || args.authParams || {}) };
    const built = args.echo ? buildEcho(args, authParams, userAuthParams) : buildPusher(args, authParams, userAuthParams);
    const client = {
      cid: args.cid,
      pusher: built.pusher,
      echo: built.echo,
      authParams,
      userAuthParams,
      lastError: undefined,
      lastClose: null,
      recordedChannels: new WeakSet(),
      recordedTransports: new WeakSet(),
      presenceHooks: new Set(),
    };
    clients.set(args.cid, client);
    // The constructor has already started connecting (pusher-js has no "don't connect yet" option),
    // so the first recorded transition is usually connecting -> connected.
    attachConnectionRecorders(client);
    return { socket_id: await waitConnected(client, args.timeoutMs) };
  },

  async reconnect(args) {
    const client = getClient(args.cid);
    client.pusher.connect();
    return { socket_id: await waitConnected(client, args.timeoutMs) };
  },

  async disconnect(args) {
    const client = getClient(args.cid);
    client.pusher.disconnect();
    return { state: client.pusher.connection.state };
  },

  async wait_state(args) {
    const client = getClient(args.cid);
    const connection = client.pusher.connection;
    return waitFor(
      args.timeoutMs,
      () => `client ${args.cid} to reach state ${args.state} (now ${connection.state})`,
      (resolve, _reject, track) => {
        if (connection.state === args.state) {
          resolve({ state: connection.state, socket_id: connection.socket_id ?? null });
          return;
        }
        bindTracked(track, connection, 'state_change', ({ current }) => {
          if (current === args.state) resolve({ state: current, socket_id: connection.socket_id ?? null });
        });
      },
    );
  },

  async state(args) {
    const client = getClient(args.cid);
    const connection = client.pusher.connection;
    return {
      state: connection.state,
      socket_id: connection.socket_id ?? null,
      last_error: lastErrorOf(client),
      last_close: client.lastClose,
    };
  },

  async set_auth_params(args) {
    const client = getClient(args.cid);
    const target = args.user ? client.userAuthParams : client.authParams;
    for (const key of Object.keys(target)) delete target[key];
    Object.assign(target, args.params || {});
    return true;
  },

  async subscribe(args) {
    const client = getClient(args.cid);
    const channel = client.pusher.subscribe(args.channel);
    attachChannelRecorder(client, channel);
    return waitSubscription(client, channel, args.timeoutMs);
  },

  async unsubscribe(args) {
    const client = getClient(args.cid);
    client.pusher.unsubscribe(args.channel);
    return true;
  },

  async trigger(args) {
    const client = getClient(args.cid);
    const channel = client.pusher.channel(args.channel);
    if (!channel) throw new DriverError(`client ${args.cid} has no channel ${args.channel}`);
    return channel.trigger(args.event, args.data);
  },

  async members(args) {
    const client = getClient(args.cid);
    const channel = client.pusher.channel(args.channel);
    if (!channel || !channel.members) throw new DriverError(`client ${args.cid} has no presence channel ${args.channel}`);
    return membersSnapshot(channel);
  },

  async signin(args) {
    const client = getClient(args.cid);
    const { pusher } = client;
    const user = pusher.user;
    const channelName = () => (user.user_data ? `#server-to-user-${user.user_data.id}` : null);
    return waitFor(
      args.timeoutMs,
      () => `client ${args.cid} to sign in (user_data ${JSON.stringify(user.user_data)})`,
      (resolve, reject, track) => {
        let signedIn = false;
        const succeed = (userChannel) => resolve({ user_data: plain(user.user_data), user_channel: userChannel });
        // pusher-js's own UserFacade binding runs before ours, so user_data is already parsed here.
        bindTracked(track, pusher.connection, 'message', (message) => {
          if (message.event === 'pusher:signin_success') {
            if (!user.user_data) {
              reject(new DriverError('pusher-js rejected the signin_success user_data', plain(message.data)));
              return;
            }
            signedIn = true;
            if (!args.waitUserChannel) succeed(null);
          } else if (signedIn && message.channel && message.channel === channelName()) {
            if (message.event === 'pusher_internal:subscription_succeeded') succeed('succeeded');
            else if (message.event === 'pusher:subscription_error') succeed('error');
          }
        });
        bindTracked(track, user, 'pusher:signin_error', (err) => {
          reject(new DriverError('signin failed at the user authentication endpoint', plain(err)));
        });
        bindTracked(track, pusher.connection, 'error', (err) => {
          reject(new DriverError('connection error during signin', plain(err)));
        });
        bindTracked(track, pusher.connection, 'state_change', ({ current }) => {
          if (current !== 'connected') {
            reject(new DriverError(`connection went ${current} during signin`, { state: current, error: lastErrorOf(client) }));
          }
        });
        if (user.user_data) {
          // Already signed in: pusher-js ignores a second signin(), so report the current state.
          const userChannel = user.serverToUserChannel && user.serverToUserChannel.subscribed ? 'succeeded' : null;
          if (!args.waitUserChannel || userChannel) {
            succeed(userChannel);
            return;
          }
          signedIn = true;
        }
        pusher.signin();
      },
    );
  },

  async echo_listen(args) {
    const client = getClient(args.cid);
    const { echo } = client;
    if (!echo) throw new DriverError(`client ${args.cid} was not connected with echo=True`);
    let channel;
    switch (args.kind) {
      case 'channel':
        channel = echo.channel(args.name);
        break;
      case 'private':
        channel = echo.private(args.name);
        break;
      case 'encrypted':
        channel = echo.encryptedPrivate(args.name);
        break;
      case 'presence':
        channel = echo.join(args.name);
        break;
      default:
        throw new DriverError(`unknown Echo channel kind ${JSON.stringify(args.kind)}`);
    }
    const subscription = channel.subscription;
    const fullName = channel.name;
    attachChannelRecorder(client, subscription);
    if (args.event) {
      // Named bindings get (data, metadata); metadata.user_id is set for client events on presence channels.
      channel.listen(args.event, (data, metadata) =>
        record(args.cid, 'echo', args.event, fullName, data, metadata && metadata.user_id),
      );
    }
    if (args.kind === 'presence' && !client.presenceHooks.has(fullName)) {
      client.presenceHooks.add(fullName);
      channel
        .here((members) => record(args.cid, 'echo', 'here', fullName, members))
        .joining((info) => record(args.cid, 'echo', 'joining', fullName, info))
        .leaving((info) => record(args.cid, 'echo', 'leaving', fullName, info));
    }
    if (subscription.subscribed) return { status: 'succeeded', channel: fullName, data: null };
    return waitFor(
      args.timeoutMs,
      () => `Echo ${args.kind} channel ${fullName} of client ${args.cid} to subscribe`,
      (resolve) => {
        // Echo's subscribed()/error() bind permanently and cannot be unbound; the waiter's `done` guard
        // makes later re-subscriptions harmless.
        channel.subscribed(() => resolve({ status: 'succeeded', channel: fullName, data: null }));
        channel.error((err) => resolve({ status: 'error', channel: fullName, data: plain(err) }));
      },
    );
  },

  async echo_whisper(args) {
    const client = getClient(args.cid);
    if (!client.echo) throw new DriverError(`client ${args.cid} was not connected with echo=True`);
    const prefix = { channel: '', private: 'private-', encrypted: 'private-encrypted-', presence: 'presence-' }[args.kind];
    const channel = client.echo.connector.channels[`${prefix}${args.name}`];
    if (!channel) throw new DriverError(`client ${args.cid} has no Echo ${args.kind} channel ${args.name}`);
    if (typeof channel.whisper !== 'function') throw new DriverError(`Echo ${args.kind} channels cannot whisper`);
    channel.whisper(args.event, args.data);
    return true;
  },

  async echo_leave(args) {
    const client = getClient(args.cid);
    if (!client.echo) throw new DriverError(`client ${args.cid} was not connected with echo=True`);
    client.echo.leave(args.name);
    return true;
  },

  async shutdown() {
    for (const client of clients.values()) client.pusher.disconnect();
    setTimeout(() => process.exit(0), 50);
    return true;
  },
};

function waitSubscription(client, channel, timeoutMs) {
  const snapshot = () => (channel.members ? membersSnapshot(channel) : null);
  return waitFor(
    timeoutMs,
    () =>
      `client ${client.cid} subscription to ${channel.name} (pending ${channel.subscriptionPending}, ` +
      `state ${client.pusher.connection.state})`,
    (resolve, reject, track) => {
      if (channel.subscribed) {
        resolve({ status: 'succeeded', data: snapshot() });
        return;
      }
      bindTracked(track, channel, 'pusher:subscription_succeeded', (data) =>
        resolve({ status: 'succeeded', data: channel.members ? snapshot() : plain(data) }),
      );
      bindTracked(track, channel, 'pusher:subscription_error', (err) => resolve({ status: 'error', data: plain(err) }));
      bindTracked(track, client.pusher.connection, 'state_change', ({ current }) => {
        if (current !== 'connected' && current !== 'connecting') {
          reject(new DriverError(`connection went ${current} while subscribing to ${channel.name}`, { error: lastErrorOf(client) }));
        }
      });
    },
  );
}

async function handle(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch (err) {
    process.stderr.write(`[driver] ignoring unparsable request ${line}: ${err}\n`);
    return;
  }
  const { id, op, args } = request;
  const fn = Object.prototype.hasOwnProperty.call(ops, op) ? ops[op] : null;
  if (!fn) {
    emit({ type: 'reply', id, ok: false, error: { message: `unknown op ${JSON.stringify(op)}`, data: null } });
    return;
  }
  try {
    const result = await fn({ timeoutMs: 5000, ...(args || {}) });
    emit({ type: 'reply', id, ok: true, result: plain(result) });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    emit({ type: 'reply', id, ok: false, error: { message, data: plain(err && err.data) } });
  }
}

const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on('line', (line) => {
  if (line.trim()) handle(line);
});
// The Python side owns this process: when its end of stdin closes, stop.
input.on('close', () => {
  for (const client of clients.values()) client.pusher.disconnect();
  setTimeout(() => process.exit(0), 50);
});

emit({
  type: 'ready',
  versions: { node: process.versions.node, 'pusher-js': packageVersion('pusher-js'), 'laravel-echo': packageVersion('laravel-echo'), ws: packageVersion('ws'), websocket: process.env.HUB_JS_WEBSOCKET || 'faye' },
});
