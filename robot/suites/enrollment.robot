*** Settings ***
Documentation       Enrollment: who may join the fleet, and how refusals read
...                 (mirrors suites/enrollment/test_enrollment.py).
Resource            ../wasmbed.resource
Suite Setup         Wasmbed Suite Setup
Suite Teardown      Wasmbed Suite Teardown
Test Setup          Start Gateway
Test Teardown       Wasmbed Test Teardown


*** Test Cases ***
Pairing On Enrolls And Connects
    Create Device    sensor
    ${device_id}=    Device Should Enroll And Connect
    Should Match Regexp    ${device_id}    ^[0-9a-f]{32}$
    Gateway Should Have Devices    1
    Console Log Should Contain    online as ${device_id}

Pairing Off Refuses An Unknown Device With A Reason
    [Setup]    Start Gateway    pairing=False
    Create Device    stranger
    ${code}    ${reason}=    Wait Until Rejected    code=PAIRING_DISABLED
    Should Contain    ${reason}    pairing
    Gateway Should Have Devices    0

Turning Pairing On Admits A Waiting Device
    [Setup]    Start Gateway    pairing=False
    Create Device    patient
    Wait Until Rejected    code=PAIRING_DISABLED
    Enable Pairing
    Device Should Enroll And Connect

Revoked Device Is Dropped And Refused
    Create Device    doomed
    Device Should Enroll And Connect
    Revoke Device
    Wait Until Rejected    code=REVOKED
    Wait Until Disconnected

Enrolled Device Reconnects Without Pairing
    Create Device    regular
    ${first_id}=    Device Should Enroll And Connect
    Disable Pairing
    Reboot Device
    ${again}=    Wait Until Connected
    Should Be Equal    ${again}    ${first_id}
    Gateway Should Have Devices    1
