-- Argo CD health check for schemashift.io/SchemaMigration (docs/argocd.md).
-- Without it Argo CD calls the resource Healthy as soon as it exists (argo-cd#16357), and a
-- PreSync hook would let the new release roll out before its migration ran.
-- Runs with Argo CD's default libraries for argocd-cm scripts (base and table: no string or os).
local hs = {}

local function find_condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

local function with_reason(text, condition)
  if condition ~= nil and condition.reason ~= nil then
    return text .. " (reason " .. condition.reason .. ")"
  end
  return text
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the schemashift operator to start this migration"
  return hs
end

local phase = status.phase
local message = status.message or ""
local generation = obj.metadata.generation
-- A status of an older spec is not the answer for this one, unless it Succeeded: the operator
-- never runs a Succeeded resource again.
if phase ~= "Succeeded" and generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "The operator has not acted on generation " .. generation .. " yet (last: "
    .. phase .. ")"
  return hs
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message
  local contract = find_condition(status, "ContractPending")
  if contract ~= nil and contract.status == "True" then
    hs.message = "Expand succeeded; contract pending: " .. (contract.message or "") .. ". "
      .. message
  end
  return hs
end

if phase == "Failed" or phase == "RolledBack" then
  local failed = find_condition(status, "Failed")
  if failed == nil or failed.status ~= "True" then
    failed = find_condition(status, "Stalled")
  end
  hs.status = "Degraded"
  hs.message = with_reason(phase .. ": " .. message, failed)
  return hs
end

if phase == "AwaitingApproval" then
  hs.status = "Suspended"
  local hash = ""
  if status.plan ~= nil and status.plan.hash ~= nil then
    hash = " --plan-hash " .. status.plan.hash
  end
  hs.message = "Awaiting approval: " .. message .. " (schemashift approve -n "
    .. (obj.metadata.namespace or "default") .. " " .. obj.metadata.name .. hash .. ")"
  return hs
end

hs.status = "Progressing"
if message ~= "" then
  hs.message = phase .. ": " .. message
else
  hs.message = phase
end
return hs
