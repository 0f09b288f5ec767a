*** Settings ***
Documentation       Deployment: modules travel to devices, run under limits and report how
...                 they end (mirrors suites/deployment/test_deployment.py).
Resource            ../wasmbed.resource
Suite Setup         Wasmbed Suite Setup
Suite Teardown      Wasmbed Suite Teardown
Test Setup          Start Gateway With One Device
Test Teardown       Wasmbed Test Teardown


*** Test Cases ***
Module Runs And Its Result Comes Back
    ${outcome}    ${values}=    Run Module    add    40    2    app_id=adder
    Should Be Equal    ${outcome}    RETURNED
    Should Be Equal    ${values}    ${{[42]}}
    ${result}=    Get Execution Result
    # fuel is counted per runtime (docs/protocol.md "Fuel, per runtime"): WAMR reports 0 here
    Should Be True    ${result}[fuel_used] <= 50000000

Trap Is Reported As Trapped
    Run Module    trap    app_id=trapper    outcome=TRAPPED    detail=unreachable
    Run Module    trap    app_id=trapper    entry=divzero    outcome=TRAPPED    detail=divi

Runaway Module Runs Out Of Fuel
    Run Module    spin    app_id=spinner    fuel=200000    time_limit=10s
    ...    outcome=OUT_OF_FUEL    detail=fuel

Unknown Entry Point Fails To Load
    Run Module    add    app_id=adder    entry=nope    outcome=LOAD_FAILED    detail=nope

Oversized Module Is Refused
    [Setup]    Start Gateway
    Create Device    small    max_module_size=4096
    Device Should Enroll And Connect
    Deploy Module    data:10000    app_id=big    expected_error=MODULE_TOO_LARGE

Module Larger Than A Frame Arrives In Chunks
    [Setup]    Start Gateway
    Create Device    narrow    max_frame_size=4096
    Device Should Enroll And Connect
    ${sum}=    Get Data Checksum    40000
    Run Module    data:40000    entry=checksum    outcome=RETURNED    values=${sum}

Deployment To An Offline Device Is Delivered When It Returns
    Cut Power
    Wait Until Disconnected
    ${state}=    Deploy Module    add    20    22    app_id=adder    wait=${False}
    Should Be Equal    ${state}    pending
    Power On
    Wait For Execution Result    adder    outcome=RETURNED    values=42

Power Cut After A Chunk Is Acknowledged Then The Deployment Completes
    [Documentation]    Mirrors suites/power/test_power_at_protocol_points.py (docs/faults.md).
    [Setup]    Start Gateway
    Create Device    narrow    max_frame_size=4096
    Device Should Enroll And Connect
    ${cut}=    Do At Protocol Point    power off    after chunk acked    3
    ${sum}=    Get Data Checksum    40000
    Deploy Module    data:40000    entry=checksum    wait=${False}
    Wait For Protocol Point    ${cut}
    Wait Until Disconnected
    Power On
    # Two transfers of 40 kB over an emulated UART (about 10 KiB/s) on a loaded machine.
    Wait For Execution Result    outcome=RETURNED    values=${sum}    timeout=60s

A Fleet Of Three Runs The Same Module
    [Setup]    Start Gateway
    @{fleet}=    Start Fleet Of 3 Devices
    Every Device Should Run Module    ${fleet}    fib    15    entry=fib    values=[610]
