*** Settings ***
Documentation       Link impairments on every backend: the same scenario on virtual devices
...                 (through their relay) and on firmware ones (through the UART bridge)
...                 (mirrors suites/link/test_link.py).
Resource            ../wasmbed.resource
Suite Setup         Wasmbed Suite Setup
Suite Teardown      Wasmbed Suite Teardown
Test Setup          Start Gateway With One Device
Test Teardown       Wasmbed Test Teardown


*** Test Cases ***
A Partition For A Duration Heals By Itself And The Device Reconnects
    ${device_id}=    Get Device Id
    Wait For Heartbeats    1
    Impair Link    partition    duration=1.5s
    Wait Until Disconnected
    Wait Until Link Restored
    ${again}=    Wait Until Connected    timeout=30s
    Should Be Equal    ${again}    ${device_id}
    Wait For Heartbeats    1    timeout=30s

On A Slow Line A Module Still Deploys And Runs
    Impair Link    latency    delay=20ms    jitter=10ms    seed=1
    Impair Link    bandwidth    baud=115200
    ${outcome}    ${values}=    Run Module    add    40    2    app_id=adder
    Should Be Equal    ${outcome}    RETURNED
    Should Be Equal    ${values}    ${{[42]}}
    Restore Link
    Wait For Heartbeats    1

A Half-Open Link Makes The Device Unreachable Until It Heals
    Wait For Heartbeats    1
    Impair Link    half-open    direction=up
    Wait Until Unreachable
    Restore Link
    Wait Until Connected    timeout=30s
    Heartbeats Should Keep Device Connected    6
