-- wrk script: POSTs the 2 KB form, each request with its own instanceID, as HQ would.
local template = io.open(os.getenv("BENCH_FORM") or "bench/form-2k.xml"):read("*a")
local counter = 0
local thread_id = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("thread_id", thread_id)
end

request = function()
  counter = counter + 1
  local id = string.format("bench-%d-%d-%d", thread_id or 0, counter, os.time())
  local body = template:gsub("INSTANCE_ID", id)
  return wrk.format("POST", "/ingest/bench", {
    ["Content-Type"] = "text/xml",
    ["received-on"] = "2024-05-02T06:14:09.482113Z",
  }, body)
end
