"""Record renderers: one fact (a sign-in, a mailbox event, a gateway request) -> one export format.

The scenario decides *what* happens (``SignIn``, ``MailEvent``); these functions only decide how each
export spells it: field names, order, time format, nesting as objects or JSON strings (formats.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipeline.samplegen import world as w
from pipeline.samplegen.writers import (
    compact, csv_row, iso_7_offset, iso_7z, iso_ms_z, iso_z, la_csv_time, ms_json_line, purview_time, ual, ual_json,
)


@dataclass
class SignIn:
    """One Entra sign-in, whatever export later carries it."""

    id: str
    time: datetime
    kind: str  # interactiveUser, nonInteractiveUser, servicePrincipal
    app_id: str
    app_name: str
    resource: str
    ip: str
    correlation_id: str
    session_id: str
    uti: str
    user: w.User | None = None
    service: w.ServiceApp | None = None
    user_agent: str = ""
    client_app_used: str = ""
    error_code: int = 0
    failure_reason: str = "Other."
    additional_details: str | None = None
    incoming_token_type: str = "none"
    mfa: bool = False
    processing_ms: int = 90
    location: w.Office = w.REDMOND


# --------------------------------------------------------------------------- sign-ins: Graph /beta
def _location(office: w.Office) -> dict[str, Any]:
    return {"city": office.city, "state": office.state, "countryOrRegion": office.country,
            "geoCoordinates": {"altitude": None, "latitude": office.lat, "longitude": office.lon}}


_EMPTY_TAIL = {
    "privateLinkDetails": {"policyId": "", "policyName": "", "resourceId": "", "policyTenantId": ""},
    "appliedEventListeners": [],
    "authenticationAppPolicyEvaluationDetails": [],
    "managedServiceIdentity": {"msiType": "none", "associatedResourceId": "", "federatedTokenId": "",
                               "federatedTokenIssuer": ""},
    "tokenProtectionStatusDetails": {"signInSessionStatus": "none", "signInSessionStatusCode": None},
}


def graph_signin(s: SignIn, created: str | None = None) -> dict[str, Any]:
    """A Graph /beta ``signIn`` object in Extractor-Suite's key order (formats.md 1)."""
    res = w.RESOURCES[s.resource]
    if s.kind == "servicePrincipal":
        sp = s.service
        assert sp is not None
        rec: dict[str, Any] = {
            "id": s.id, "createdDateTime": created or iso_z(s.time), "userDisplayName": "", "userPrincipalName": "",
            "userId": "", "appId": s.app_id, "appDisplayName": s.app_name, "ipAddress": s.ip,
            "ipAddressFromResourceProvider": None, "clientAppUsed": "", "userAgent": "", "correlationId": s.correlation_id,
            "conditionalAccessStatus": "notApplied", "originalRequestId": "", "isInteractive": False,
            "tokenIssuerName": "", "tokenIssuerType": "UnknownFutureValue", "clientCredentialType": "certificate",
            "processingTimeInMilliseconds": -1, "riskDetail": "none", "riskLevelAggregated": "none",
            "riskLevelDuringSignIn": "none", "riskState": "none", "riskEventTypes_v2": [],
            "resourceDisplayName": res["name"], "resourceId": s.resource, "resourceTenantId": "", "homeTenantId": "",
            "homeTenantName": "", "authenticationMethodsUsed": [], "authenticationRequirement": "", "signInIdentifier": "",
            "signInIdentifierType": None, "servicePrincipalName": sp.name, "signInEventTypes": ["servicePrincipal"],
            "servicePrincipalId": sp.sp_id, "federatedCredentialId": "", "userType": None, "flaggedForReview": False,
            "isTenantRestricted": False, "autonomousSystemNumber": 0, "crossTenantAccessType": "none",
            "servicePrincipalCredentialKeyId": sp.credential_key_id,
            "servicePrincipalCredentialThumbprint": sp.thumbprint, "uniqueTokenIdentifier": s.uti,
            "incomingTokenType": "none", "authenticationProtocol": "none", "resourceServicePrincipalId": res["sp"],
            "signInTokenProtectionStatus": "none", "originalTransferMethod": "none", "isThroughGlobalSecureAccess": False,
            "globalSecureAccessIpAddress": "", "sessionId": s.session_id, "appOwnerTenantId": w.CONTOSO_TID,
            "resourceOwnerTenantId": "", "mfaDetail": None, "authenticationAppDeviceDetails": None,
            "status": {"errorCode": s.error_code, "failureReason": s.failure_reason, "additionalDetails": None},
            "deviceDetail": {"deviceId": "", "displayName": "", "operatingSystem": "", "browser": "", "isCompliant": None,
                             "isManaged": None, "trustType": ""},
            "location": _location(s.location),
        }
        rec.update({"appliedConditionalAccessPolicies": [], "authenticationProcessingDetails": [],
                    "authenticationDetails": []})
        rec.update(_EMPTY_TAIL)
        return rec
    u = s.user
    assert u is not None
    guest = u.kind == "guest"
    os_name, browser, _ = w.DEVICES[u.os]
    ok = s.error_code == 0
    steps = [{"authenticationStepDateTime": iso_z(s.time), "authenticationMethod": "Password",
              "authenticationMethodDetail": "Password in the cloud", "succeeded": ok,
              "authenticationStepResultDetail": "Correct password" if ok else "Invalid username or password or Invalid on-premise username or password.",
              "authenticationStepRequirement": "Primary authentication"}]
    if s.mfa and ok:
        steps.append({"authenticationStepDateTime": iso_z(s.time), "authenticationMethod": "Mobile app notification",
                      "authenticationMethodDetail": "", "succeeded": True,
                      "authenticationStepResultDetail": "MFA successfully completed",
                      "authenticationStepRequirement": "Primary authentication"})
    rec = {
        "id": s.id, "createdDateTime": created or iso_z(s.time), "userDisplayName": u.display,
        "userPrincipalName": u.upn, "userId": u.oid, "appId": s.app_id, "appDisplayName": s.app_name,
        "ipAddress": s.ip, "ipAddressFromResourceProvider": None, "clientAppUsed": s.client_app_used,
        "userAgent": s.user_agent, "correlationId": s.correlation_id,
        "conditionalAccessStatus": "success" if ok else "notApplied", "originalRequestId": s.id,
        "isInteractive": True, "tokenIssuerName": "", "tokenIssuerType": "AzureAD", "clientCredentialType": "none",
        "processingTimeInMilliseconds": s.processing_ms, "riskDetail": "none", "riskLevelAggregated": "none",
        "riskLevelDuringSignIn": "none", "riskState": "none", "riskEventTypes_v2": [],
        "resourceDisplayName": w.RESOURCES[s.resource]["name"], "resourceId": s.resource,
        "resourceTenantId": w.CONTOSO_TID, "homeTenantId": w.FABRIKAM_TID if guest else w.CONTOSO_TID,
        "homeTenantName": w.FABRIKAM_NAME if guest else w.CONTOSO_NAME,
        "authenticationMethodsUsed": (["Password", "Mobile app notification"] if s.mfa else ["Password"]) if ok else [],
        "authenticationRequirement": "multiFactorAuthentication" if s.mfa else "singleFactorAuthentication",
        "signInIdentifier": u.upn, "signInIdentifierType": None, "servicePrincipalName": "",
        "signInEventTypes": ["interactiveUser"], "servicePrincipalId": "", "federatedCredentialId": "",
        "userType": "guest" if guest else "member", "flaggedForReview": False, "isTenantRestricted": False,
        "autonomousSystemNumber": s.location.asn, "crossTenantAccessType": "b2bCollaboration" if guest else "none",
        "servicePrincipalCredentialKeyId": "", "servicePrincipalCredentialThumbprint": "",
        "uniqueTokenIdentifier": s.uti, "incomingTokenType": s.incoming_token_type, "authenticationProtocol": "none",
        "resourceServicePrincipalId": w.RESOURCES[s.resource]["sp"], "signInTokenProtectionStatus": "none",
        "originalTransferMethod": "none", "isThroughGlobalSecureAccess": False, "globalSecureAccessIpAddress": "",
        "sessionId": s.session_id, "appOwnerTenantId": w.MICROSOFT_SERVICES_TID,
        "resourceOwnerTenantId": w.MICROSOFT_SERVICES_TID, "mfaDetail": None, "authenticationAppDeviceDetails": None,
        "status": {"errorCode": s.error_code, "failureReason": s.failure_reason, "additionalDetails": s.additional_details},
        "deviceDetail": {"deviceId": "" if guest else u.device_id, "displayName": "", "operatingSystem": os_name,
                         "browser": browser, "isCompliant": None if guest else True, "isManaged": None if guest else True,
                         "trustType": "" if guest else "Azure AD joined"},
        "location": _location(s.location),
        "appliedConditionalAccessPolicies": [],
        "authenticationProcessingDetails": [{"key": "Is CAE Token", "value": "True"}],
        "authenticationDetails": steps,
    }
    rec.update(_EMPTY_TAIL)
    return rec


def eventhub_signin(s: SignIn) -> dict[str, Any]:
    """The same sign-in as a diagnostic-settings (Event Hub / Storage) record (formats.md 1b)."""
    props = graph_signin(s, created=iso_7_offset(s.time))
    return {
        "time": iso_7z(s.time + timedelta(seconds=2)), "resourceId": f"/tenants/{w.CONTOSO_TID}/providers/Microsoft.aadiam",
        "operationName": "Sign-in activity", "operationVersion": "1.0", "category": "SignInLogs",
        "tenantId": w.CONTOSO_TID, "resultType": str(s.error_code), "resultSignature": "None",
        "resultDescription": "" if s.error_code == 0 else s.failure_reason, "durationMs": 0,
        "callerIpAddress": s.ip, "correlationId": s.correlation_id, "identity": s.user.display if s.user else "",
        "Level": 4, "location": s.location.country, "properties": props,
    }


# --------------------------------------------------------------------------- sign-ins: Log Analytics portal CSV
LA_HEADER = [
    "TenantId", "SourceSystem", "TimeGenerated [UTC]", "OperationName", "OperationVersion", "Category", "ResultType",
    "ResultSignature", "ResultDescription", "DurationMs", "CorrelationId", "Identity", "Level", "Location",
    "AlternateSignInName", "AppDisplayName", "AppId", "AuthenticationContextClassReferences", "AuthenticationDetails",
    "AuthenticationMethodsUsed", "AuthenticationProcessingDetails", "AuthenticationProtocol",
    "AuthenticationRequirement", "AuthenticationRequirementPolicies", "AutonomousSystemNumber", "ClientAppUsed",
    "ConditionalAccessPolicies", "ConditionalAccessStatus", "CreatedDateTime [UTC]", "CrossTenantAccessType",
    "DeviceDetail", "HomeTenantId", "Id", "IncomingTokenType", "IPAddress", "IsInteractive", "IsRisky",
    "LocationDetails", "MfaDetail", "NetworkLocationDetails", "OriginalRequestId", "ProcessingTimeInMs",
    "ResourceDisplayName", "ResourceIdentity", "ResourceServicePrincipalId", "ResourceTenantId", "RiskDetail",
    "RiskEventTypes", "RiskEventTypes_V2", "RiskLevelAggregated", "RiskLevelDuringSignIn", "RiskState",
    "ServicePrincipalId", "SessionLifetimePolicies", "SignInEventTypes", "Status", "TokenIssuerName",
    "TokenIssuerType", "UniqueTokenIdentifier", "UserAgent", "UserDisplayName", "UserId", "UserPrincipalName",
    "UserType", "SessionId", "ClientSessionId", "HomeTenantName", "TokenProtectionStatusDetails", "Type",
]
LA_IP_COLUMN = LA_HEADER.index("IPAddress")


def la_nonint_cells(s: SignIn, generated: datetime, *, pretty_location: bool) -> list[str]:
    """An AADNonInteractiveUserSignInLogs row as the portal's "Export to CSV" writes it (formats.md 2)."""
    u = s.user
    assert u is not None
    os_name, browser, _ = w.DEVICES[u.os]
    ok = s.error_code == 0
    location = {"city": s.location.city, "state": s.location.state, "countryOrRegion": s.location.country,
                "geoCoordinates": {"latitude": s.location.lat, "longitude": s.location.lon}}
    device = {"deviceId": u.device_id, "operatingSystem": os_name, "browser": browser, "isCompliant": True,
              "isManaged": True, "trustType": "Azure AD joined"}
    status: dict[str, Any] = {"errorCode": s.error_code}
    if ok:
        status["additionalDetails"] = "MFA requirement satisfied by claim in the token"
    else:
        status["failureReason"] = s.failure_reason
    scope = "[\"Mail.ReadWrite\",\"Mail.Send\",\"Calendars.ReadWrite\",\"User.Read\"]"
    processing = [{"key": "Is CAE Token", "value": "True"}, {"key": "Oauth Scope Info", "value": scope}]
    return [
        w.CONTOSO_TID, "Azure AD", la_csv_time(generated), "Sign-in activity", "1.0", "NonInteractiveUserSignInLogs",
        str(s.error_code), "None", "" if ok else s.failure_reason, "0", s.correlation_id, u.display, "4",
        s.location.country, u.upn, s.app_name, s.app_id, "[]", "[]", "[]", compact(processing), "none",
        "singleFactorAuthentication", "[]", str(s.location.asn), s.client_app_used, "[]", "notApplied",
        la_csv_time(s.time), "none", compact(device), w.CONTOSO_TID, s.id, s.incoming_token_type, s.ip, "FALSE",
        "FALSE", json.dumps(location, indent=2) if pretty_location else compact(location), "{}", "[]", s.id,
        str(s.processing_ms), w.RESOURCES[s.resource]["name"], s.resource, w.RESOURCES[s.resource]["sp"],
        w.CONTOSO_TID, "none", "[]", "[]", "none", "none", "none", "", "[]", "[\"nonInteractiveUser\"]",
        compact(status), "", "AzureAD", s.uti, s.user_agent, u.display, u.oid, u.upn, "Member", s.session_id, "",
        w.CONTOSO_NAME, compact({"signInSessionStatus": "unbound", "signInSessionStatusCode": 1003}),
        "AADNonInteractiveUserSignInLogs",
    ]


# --------------------------------------------------------------------------- mailbox audit (UAL)
PURVIEW_HEADER = "RecordId,CreationDate,RecordType,Operation,UserId,AuditData,AssociatedAdminUnits,AssociatedAdminUnitsNames\r\n"
ORIGINATING = ("CH3PR10MB7864 (15.20.9298.012)\r\n", "DM6PR11MB4107 (15.20.9298.012)\r\n",
               "AM0PR04MB6433 (15.20.9311.009)\r\n")


@dataclass
class MailEvent:
    """One Exchange mailbox audit event; ``token`` ties it to the Entra token that authorized it."""

    id: str
    time: datetime
    operation: str  # MailItemsAccessed, Send, New-InboxRule
    user: w.User
    client_ip: str
    client_ip_with_port: str
    app_id: str
    client_info: str
    exchange_session: str
    originating: str
    client_request_id: str
    token_uti: str
    token_session: str | None
    token_issued: datetime
    token_tenant: str = w.CONTOSO_TID
    api_id: str = w.EXO
    access_type: str = "Sync"  # MailItemsAccessed: Bind or Sync
    folders: list[dict[str, Any]] = field(default_factory=list)
    operation_count: int = 1
    item: dict[str, Any] | None = None  # Send
    rule: list[dict[str, str]] | None = None  # New-InboxRule parameters
    rule_name: str = ""


def _app_access_context(e: MailEvent, issued: str) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    if e.token_session:
        ctx["AADSessionId"] = e.token_session
    ctx.update({"APIId": e.api_id, "ClientAppId": e.app_id, "IssuedAtTime": issued, "UniqueTokenId": e.token_uti})
    return ctx


def ual_mail(e: MailEvent) -> dict[str, Any]:
    """The UAL AuditData object for a mailbox event (formats.md 4)."""
    u = e.user
    head: dict[str, Any] = {
        "AppAccessContext": _app_access_context(e, ual(e.token_issued)),
        "CreationTime": ual(e.time), "Id": e.id, "Operation": e.operation, "OrganizationId": w.CONTOSO_TID,
    }
    if e.operation == "New-InboxRule":
        head.update({
            "RecordType": 1, "ResultStatus": "True", "UserKey": u.puid, "UserType": 0, "Version": 1,
            "Workload": "Exchange", "ClientIP": e.client_ip_with_port,
            "ObjectId": f"EURPR04A011.PROD.OUTLOOK.COM/Microsoft Exchange Hosted Organizations/{w.CONTOSO_ORG}/{u.oid}\\{e.rule_name}",
            "UserId": u.upn, "AppId": w.EXO, "ClientAppId": "", "ExternalAccess": False, "OrganizationName": w.CONTOSO_ORG,
            "OriginatingServer": e.originating.strip(), "Parameters": e.rule, "SessionId": e.token_session,
        })
        return head
    head.update({
        "RecordType": 50 if e.operation == "MailItemsAccessed" else 2, "ResultStatus": "Succeeded",
        "UserKey": u.puid, "UserType": 0, "Version": 1, "Workload": "Exchange", "ClientIP": e.client_ip_with_port,
        "UserId": u.upn, "AppId": e.app_id, "ClientAppId": e.app_id, "ClientIPAddress": e.client_ip,
        "ClientInfoString": e.client_info, "ClientRequestId": e.client_request_id, "ExternalAccess": False,
        "InternalLogonType": 0, "LogonType": 0, "LogonUserSid": u.sid, "MailboxGuid": u.mailbox_guid,
        "MailboxOwnerSid": u.sid, "MailboxOwnerUPN": u.upn,
    })
    if e.operation == "MailItemsAccessed":
        head["OperationProperties"] = [{"Name": "MailAccessType", "Value": e.access_type},
                                       {"Name": "IsThrottled", "Value": "False"}]
    head.update({"OrganizationName": w.CONTOSO_ORG, "OriginatingServer": e.originating,
                 "SessionId": e.exchange_session, "TokenObjectId": u.oid, "TokenTenantId": e.token_tenant})
    if e.operation == "MailItemsAccessed":
        head["Folders"] = e.folders
        head["OperationCount"] = e.operation_count
    else:
        head["Item"] = e.item
    return head


def purview_row(record_id: str, when: datetime, record_type: int, operation: str, user_id: str, audit_text: str) -> str:
    """A Purview portal export row: CreationDate in US locale, AuditData as one JSON cell (formats.md 5.1)."""
    return csv_row([record_id, purview_time(when), record_type, operation, user_id, audit_text, "", ""])


def user_logged_in(s: SignIn) -> dict[str, Any]:
    """UAL AzureActiveDirectoryStsLogon (RecordType 15) for an interactive sign-in: Id == the request id."""
    u = s.user
    assert u is not None
    os_name = {"Windows": "Windows10", "MacOs": "MacOs"}[u.os]
    return {
        "CreationTime": ual(s.time), "Id": s.id, "Operation": "UserLoggedIn", "OrganizationId": w.CONTOSO_TID,
        "RecordType": 15, "ResultStatus": "Success", "UserKey": u.oid, "UserType": 0, "Version": 1,
        "Workload": "AzureActiveDirectory", "ClientIP": s.ip, "ObjectId": s.resource, "UserId": u.upn,
        "AzureActiveDirectoryEventType": 1,
        "ExtendedProperties": [{"Name": "ResultStatusDetail", "Value": "Success"},
                               {"Name": "KeepMeSignedIn", "Value": "true"},
                               {"Name": "UserAgent", "Value": s.user_agent},
                               {"Name": "RequestType", "Value": "OAuth2:Authorize"}],
        "ModifiedProperties": [], "Actor": [{"ID": u.oid, "Type": 0}, {"ID": u.upn, "Type": 5}],
        "ActorContextId": w.CONTOSO_TID, "ActorIpAddress": s.ip, "InterSystemsId": s.correlation_id,
        "IntraSystemId": s.id, "SupportTicketId": "", "Target": [{"ID": s.resource, "Type": 0}],
        "TargetContextId": w.CONTOSO_TID, "ApplicationId": s.app_id,
        "DeviceProperties": [{"Name": "OS", "Value": os_name}, {"Name": "BrowserType", "Value": "Edge"},
                             {"Name": "IsCompliantAndManaged", "Value": "True"},
                             {"Name": "SessionId", "Value": s.session_id}],
        "ErrorNumber": "0",
    }


def office_activity(e: MailEvent, ingested: datetime) -> dict[str, Any]:
    """A Sentinel OfficeActivity row (Log Analytics JSON export): nested fields as JSON strings (formats.md 5.4)."""
    u = e.user
    issued = iso_7z(e.token_issued)
    return {
        "TenantId": w.CONTOSO_TID, "RecordType": "ExchangeItemAggregated", "TimeGenerated": iso_z(e.time),
        "Operation": e.operation, "OrganizationId": w.CONTOSO_TID, "OrganizationId_": w.CONTOSO_TID,
        "UserType": "Regular", "UserKey": u.puid, "OfficeWorkload": "Exchange", "ResultStatus": "Succeeded",
        "UserId": u.upn, "UserId_": u.upn, "ClientIP": e.client_ip_with_port, "ExternalAccess": "False",
        "OriginatingServer": e.originating, "OrganizationName": w.CONTOSO_ORG, "Logon_Type": "Owner",
        "MailboxGuid": u.mailbox_guid, "MailboxOwnerUPN": u.upn, "MailboxOwnerSid": u.sid, "LogonUserSid": u.sid,
        "ClientInfoString": e.client_info, "Client_IPAddress": e.client_ip, "Folders": compact(e.folders),
        "SourceSystem": "OfficeActivityManager", "OfficeId": e.id, "SourceRecordId": e.id,
        "Start_Time": iso_z(ingested), "OfficeTenantId": "$RestApiTenantId$", "OfficeTenantId_": "$RestApiTenantId$",
        "OperationProperties": compact([{"Name": "MailAccessType", "Value": e.access_type},
                                        {"Name": "IsThrottled", "Value": "False"}]),
        "AppId": e.app_id, "ClientAppId": e.app_id, "UniqueTokenId": e.token_uti, "IssuedAtTime": issued,
        "AppAccessContext": compact(_app_access_context(e, issued)), "SessionId": e.exchange_session,
        "Type": "OfficeActivity",
    }


def office_activity_line(e: MailEvent, ingested: datetime, time_override: str | None = None) -> str:
    row = office_activity(e, ingested)
    if time_override:
        row["TimeGenerated"] = time_override
    return ms_json_line(row)


def purview_mail_row(e: MailEvent, audit: dict[str, Any] | None = None, audit_text: str | None = None) -> str:
    audit = audit if audit is not None else ual_mail(e)
    text = audit_text if audit_text is not None else ual_json(audit)
    return purview_row(e.id, e.time, audit["RecordType"], e.operation, e.user.upn, text)


# --------------------------------------------------------------------------- gateway
def gateway_line(when: datetime, ip: str, host: str, method: str, path: str, user_agent: str, status: int,
                 request_id: str, duration_ms: int, bytes_out: int, token: str) -> str:
    """One JSON line of the reverse proxy's access log; the bearer token is logged verbatim.

    Formatted by hand (the hot path at large scales): every value is JSON-safe by construction
    except ``path`` and ``user_agent``, which are escaped only when they need it.
    """
    if '"' in path or "\\" in path:
        path = json.dumps(path)[1:-1]
    if '"' in user_agent or "\\" in user_agent:
        user_agent = json.dumps(user_agent)[1:-1]
    return (f'{{"time":"{iso_ms_z(when)}","client_ip":"{ip}","host":"{host}","path":"{path}","method":"{method}",'
            f'"user_agent":"{user_agent}","status":{status},"request_id":"{request_id}","duration_ms":{duration_ms},'
            f'"bytes_out":{bytes_out},"authorization":"Bearer {token}"}}')
