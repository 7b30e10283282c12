// The local cloud's IAM policy evaluator: @cloud-copilot/iam-simulate (identity + resource policies, conditions,
// explicit Deny, NotAction/NotResource, as AWS's policy evaluation logic documents them), kept running for the
// whole local cloud. stdin: one JSON list of simulations per line (the package's `Simulation` shape); stdout:
// one JSON list per line, one answer per simulation: "Allowed" | "ExplicitlyDenied" | "ImplicitlyDenied" |
// {"error": "..."}. Called by modeldeck/localcloud/iam.py.
const readline = require('readline')
const { runSimulation } = require('@cloud-copilot/iam-simulate')

const lines = readline.createInterface({ input: process.stdin })
let queue = Promise.resolve()
lines.on('line', (line) => {
  queue = queue.then(async () => {
    const out = []
    for (const simulation of JSON.parse(line)) {
      try {
        const response = await runSimulation(simulation, {})
        out.push(response.resultType === 'error' ? { error: JSON.stringify(response.errors) } : response.overallResult)
      } catch (err) {
        out.push({ error: String(err && err.message ? err.message : err) })
      }
    }
    process.stdout.write(JSON.stringify(out) + '\n')
  })
})
