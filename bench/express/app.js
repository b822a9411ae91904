'use strict'
// express-session's reference app for bench/run.py: the counter page of bench/servers.py in express 4.
//   node app.js <mode> [json]
// mode "plain": the page alone; "fair": the page plus the response headers given in json.headers (what the
// session app sends, as static bytes); "session": express-session 1.19 with its MemoryStore, cookie name
// "sid", maxAge 3600 s, resave/saveUninitialized false, the same secret and data as bench/cycle.py.
// Listens on 127.0.0.1 (a free port), prints {"port": N} on stdout; then each "stats" line on stdin is
// answered with {"requests", "cpu_us", "views"} (process CPU time, all threads); it exits when stdin closes.

const express = require('express')
const session = require('express-session')

const SECRET = 'bench secret: 32 random bytes would go here, e.g. secrets.token_hex(32)'
const DATA = { user_id: 4217, name: 'alice', roles: ['user', 'editor'], csrf: 'Xo1pY4n0eS2bq3dZ8QmL5vK7wR9tU6aC', views: 0 }

const mode = process.argv[2]
const config = process.argv[3] ? JSON.parse(process.argv[3]) : {}
const app = express()
app.set('etag', false)
app.set('x-powered-by', false)
let requests = 0
let lastViews = null

if (mode === 'session') {
  app.use(session({
    secret: SECRET,
    name: 'sid',
    resave: false,
    saveUninitialized: false,
    cookie: { maxAge: 3600 * 1000, httpOnly: true, sameSite: 'lax', path: '/' }
  }))
  app.get('/', (req, res) => {
    requests++
    if (req.session.user_id === undefined) Object.assign(req.session, DATA)
    req.session.views += 1
    lastViews = req.session.views
    res.type('text/plain').send('views=' + req.session.views + '\n')
  })
} else if (mode === 'plain' || mode === 'fair') {
  const headers = mode === 'fair' ? config.headers : []
  app.get('/', (req, res) => {
    requests++
    for (const [name, value] of headers) res.append(name, value)
    res.type('text/plain').send('views=' + requests + '\n')
  })
} else {
  console.error('app.js: mode must be plain, fair or session')
  process.exit(2)
}

const server = app.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n')
})
server.keepAliveTimeout = 60000

let pending = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (chunk) => {
  pending += chunk
  let newline
  while ((newline = pending.indexOf('\n')) >= 0) {
    const line = pending.slice(0, newline).trim()
    pending = pending.slice(newline + 1)
    if (line === 'stats') {
      const cpu = process.cpuUsage()
      process.stdout.write(JSON.stringify({ requests, cpu_us: cpu.user + cpu.system, views: lastViews }) + '\n')
    }
  }
})
process.stdin.on('end', () => process.exit(0))
