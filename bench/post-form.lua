-- wrk script: POSTs the 2 KB form, each request with its own instanceID, as HQ would.
-- BENCH_FORM names another template (INSTANCE_ID is replaced by a unique id) and
-- BENCH_CONTENT_TYPE its type: bench/case.json with application/json is a case forward.
local template = io.open(os.getenv("BENCH_FORM") or "bench/form-2k.xml"):read("*a")
local content_type = os.getenv("BENCH_CONTENT_TYPE") or "text/xml"
local counter = 0
local threads = 0

-- Runs in the main Lua state; `thread:set` gives each thread's own state a global `thread_id`,
-- so that two threads never send the same id (which ccrelay would answer as a duplicate).
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

request = function()
  counter = counter + 1
  local id = string.format("bench-%d-%d-%d", thread_id, counter, os.time())
  local body = template:gsub("INSTANCE_ID", id)
  return wrk.format("POST", "/ingest/bench", {
    ["Content-Type"] = content_type,
    ["received-on"] = "2024-05-02T06:14:09.482113Z",
  }, body)
end
