*** Settings ***
Documentation       Written the Renode way, for renode-test: Renode's own Setup, Teardown and
...                 Test Teardown, its Execute Command and its terminal tester (Create Terminal
...                 Tester, Wait For Line On Uart) act on a device that our keywords create,
...                 enroll and deploy to. Its devices are machines of renode-test's Renode
...                 (backend renode-test, Get Renode Machine names them).
...
...                 Run: ``renode-test robot/renode/wasmbed_on_renode.robot`` with
...                 wasmbed_hil importable by renode-test's python3. It needs
...                 ``${RENODEKEYWORDS}`` and ``${PORT_NUMBER}``, which renode-test sets:
...                 under plain ``robot`` it cannot run. Here it runs against the stand-in
...                 in tests/renode_standin (tests/test_robot_renode_test.py).
Resource            ${RENODEKEYWORDS}
Resource            ../wasmbed.resource
Suite Setup         Setup Renode And Wasmbed
Suite Teardown      Teardown
Test Teardown       Test Teardown


*** Variables ***
${BACKEND}          renode-test
${UART}             sysbus.uart0


*** Test Cases ***
Renode's Tester And Our Keywords See The Same Device
    Start Gateway
    Create Device    sensor
    ${id}=    Device Should Enroll And Connect
    ${machine}=    Get Renode Machine
    Create Terminal Tester    ${UART}    machine=${machine}    timeout=30
    Write Line To Uart    silent 1    waitForEcho=false
    Wait For Line On Uart    heartbeats silenced
    Wait Until Unreachable
    Write Line To Uart    silent 0    waitForEcho=false
    Wait For Line On Uart    heartbeats resumed
    Wait Until Connected

Reset Through Execute Command Brings The Device Back
    Start Gateway With One Device    sensor
    ${machine}=    Get Renode Machine
    Create Terminal Tester    ${UART}    machine=${machine}    timeout=30
    Execute Command    machine Reset    machine=${machine}
    Wait For Line On Uart    online as [0-9a-f]{32}    treatAsRegex=true
    Wait Until Connected
    Run Module    add    40    2    outcome=RETURNED    values=42

A Reboot Is A New Machine
    Start Gateway With One Device    sensor
    ${first}=    Get Renode Machine
    Reboot Device
    ${second}=    Get Renode Machine
    Should Be Equal    ${second}    ${first.rsplit('_b', 1)[0]}_b2
    Wait Until Connected
    Create Terminal Tester    ${UART}    machine=${second}    timeout=30
    Write Line To Uart    silent 1    waitForEcho=false
    Wait For Line On Uart    heartbeats silenced


*** Keywords ***
Setup Renode And Wasmbed
    Setup
    Import Renode Keywords
    Require Backend    renode-test
