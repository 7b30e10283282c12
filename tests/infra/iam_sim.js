// Evaluates IAM requests with @cloud-copilot/iam-simulate (identity + resource policies, with conditions).
// stdin: a JSON list of simulations (the package's `Simulation` shape); stdout: a JSON list, one per
// simulation, of {"result": "Allowed" | "ExplicitlyDenied" | "ImplicitlyDenied"} or {"error": "..."}.
// Called by tests/infra/iam_sim.py; one node process answers a whole batch.
const { runSimulation } = require('@cloud-copilot/iam-simulate')

async function main() {
  let input = ''
  for await (const chunk of process.stdin) input += chunk
  const out = []
  for (const simulation of JSON.parse(input)) {
    const response = await runSimulation(simulation, {})
    if (response.resultType === 'error') {
      out.push({ error: JSON.stringify(response.errors) })
    } else {
      out.push({ result: response.overallResult })
    }
  }
  process.stdout.write(JSON.stringify(out))
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err))
  process.exit(1)
})
