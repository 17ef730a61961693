"""Fleet simulators, driven by scenario files (examples/scenarios/README.md).

    scenario.py   the scenario format, parsed strictly
    fleetgen.py   the simulated fleet: identities, records, keys
    workspace.py  the release workspace the simulator publishes through (init, releases, fleet, policies)
    behaviour.py  simulated boot checks and health from a scenario's true release effects
    full.py       full fidelity: real agents over HTTP against a served repository and the ingest
    model.py      model mode over the statistical fleet model (fleetmodel.py)
    controlled.py full fidelity under the real rollout controller (otactl.app.rollout)
    run.py        ``otactl sim run``: one entry point for both modes
"""
