-- wrk script: POSTs pre-signed Twilio webhook requests, each once, in the order of the file.
-- The file (OPTFLOW_BENCH_REQUESTS) holds one request a line: "<X-Twilio-Signature>\t<form body>".
-- Each wrk thread takes every n-th line (n = OPTFLOW_BENCH_THREADS), so no two threads send the
-- same MessageSid; a thread that runs out starts again from its first line and counts it.
-- done() prints one JSON line that `bench.load` reads.

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("id", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

function init(args)
   local path = os.getenv("OPTFLOW_BENCH_REQUESTS")
   local stride = tonumber(os.getenv("OPTFLOW_BENCH_THREADS"))
   requests = {}
   wrapped = 0
   local line_number = 0
   for line in io.lines(path) do
      if line_number % stride == id then
         local signature, body = line:match("^([^\t]*)\t(.*)$")
         requests[#requests + 1] = wrk.format("POST", nil, {
            ["Content-Type"] = "application/x-www-form-urlencoded",
            ["X-Twilio-Signature"] = signature,
         }, body)
      end
      line_number = line_number + 1
   end
   index = 0
end

function request()
   index = index + 1
   if index > #requests then
      index = 1
      wrapped = wrapped + 1
   end
   return requests[index]
end

function done(summary, latency, requests)
   local wraps = 0
   for _, thread in ipairs(threads) do
      wraps = wraps + (thread:get("wrapped") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'OPTFLOW_BENCH_JSON {"duration_us": %d, "requests": %d, "bytes": %d, "connect_errors": %d, ' ..
      '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, "wrapped": %d, ' ..
      '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
      summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout, wraps,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
