*** Settings ***
Documentation       Faults and convergence: after a fault is healed, the devices, the gateway
...                 and what it recorded must agree (mirrors suites/faults/test_fault_matrix.py).
Resource            ../wasmbed.resource
Suite Setup         Wasmbed Suite Setup
Suite Teardown      Wasmbed Suite Teardown
Test Setup          Start Gateway With One Device
Test Teardown       Wasmbed Test Teardown


*** Test Cases ***
A Deployment Queued During A Power Cut Converges
    Cut Power
    Wait Until Disconnected
    Deploy Module    add    20    22    app_id=adder    wait=${False}
    Power On
    Device Should Hold    add    app_id=adder
    Device Should Have Results    adder    1
    Fleet Should Converge    timeout=30s

A Silenced Device Has Not Converged Until It Speaks Again
    Wait For Heartbeats    1
    Silence Device
    Wait Until Unreachable
    Run Keyword And Expect Error    *not converged within 1s*stuck_session*
    ...    Fleet Should Converge    timeout=1s
    Resume Heartbeats
    Fleet Should Converge    timeout=30s
