-- Workload 6's wrk script: every request is a GET of a random 1 MiB range of the file at the
-- URL's path.  wrk -s ranges.lua URL -- FILE_SIZE
-- Prints one JSON line at the end (requests, seconds, rps, non-2xx count, socket errors,
-- latency p50/p99 in ms).
local size, span = 0, 1048576

function init(args)
  size = tonumber(args[1])
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
  local first = math.floor(math.random() * (size - span + 1))
  return wrk.format("GET", wrk.path, { ["Range"] = "bytes=" .. first .. "-" .. (first + span - 1) })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests": %d, "seconds": %.6f, "rps": %.3f, "non2xx": %d, "socket_errors": %d, "p50_ms": %.3f, "p99_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
