-- Spread requests over 10,000 virtual hosts h0.bench.local … h9999.bench.local.
local n = 0
request = function()
  n = (n + 7919) % 10000
  return wrk.format(nil, nil, { Host = "h" .. n .. ".bench.local" })
end
