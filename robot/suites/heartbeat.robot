*** Settings ***
Documentation       Heartbeats: liveness as the gateway sees it, through silences, power cuts
...                 and restarts (mirrors suites/heartbeat/test_heartbeat.py).
Resource            ../wasmbed.resource
Suite Setup         Wasmbed Suite Setup
Suite Teardown      Wasmbed Suite Teardown
Test Setup          Start Gateway With One Device
Test Teardown       Wasmbed Test Teardown


*** Test Cases ***
Heartbeats Keep A Device Connected
    Heartbeats Should Keep Device Connected    3

Silenced Device Becomes Unreachable Then Recovers
    Wait For Heartbeats    1
    Silenced Device Should Become Unreachable And Recover
    ${phase}=    Get Device Phase
    Should Be Equal    ${phase}    Connected

Console Commands Silence And Resume Heartbeats
    Wait For Line On Console    online as [0-9a-f]{32}    treat_as_regex=True
    Write Line To Console    silent 1
    Wait For Line On Console    heartbeats silenced
    Wait Until Unreachable
    Write Line To Console    silent 0
    ${line}=    Wait For Line On Console    heartbeats resumed
    Should Contain    ${line}    resumed
    Wait Until Connected
    Wait For Heartbeats    1

Power Cut Disconnects And Power On Reconnects
    ${device_id}=    Get Device Id
    Cut Power
    Wait Until Disconnected
    Power On
    ${again}=    Wait Until Connected
    Should Be Equal    ${again}    ${device_id}
    Wait For Heartbeats    1

Restarted Gateway Sees Its Devices Reconnect
    [Setup]    Start Gateway
    @{fleet}=    Start Fleet Of 3 Devices
    Restart Gateway    pairing=False
    FOR    ${device}    IN    @{fleet}
        Wait Until Connected    ${device}
        Wait For Heartbeats    1    ${device}
    END
    Gateway Should Have Devices    3

Each Device Of A Fleet Is Watched Separately
    [Setup]    Start Gateway
    ${quiet}    @{others}=    Start Fleet Of 3 Devices
    Silence Device    ${quiet}
    Wait Until Unreachable    ${quiet}
    FOR    ${device}    IN    @{others}
        Wait For Heartbeats    1    ${device}
        Device Phase Should Be    Connected    ${device}
    END
