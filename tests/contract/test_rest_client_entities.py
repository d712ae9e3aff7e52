"""tb-rest-client 4.4 against the platform: auth, devices, credentials, profiles, assets."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
import requests
from tb_rest_client.models import Asset, Device, DeviceId, DeviceProfile
from tb_rest_client.rest import ApiException


def api_error(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_login_refresh_and_current_user(client, target):
    user = client.get_user()
    assert user.email == target.username
    assert user.authority == "TENANT_ADMIN"
    old = client.get_token()
    claims = jwt.decode(old, options={"verify_signature": False})
    assert claims["sub"] == target.username and claims["scopes"] == ["TENANT_ADMIN"]
    assert claims["exp"] > time.time() and claims["iss"] == "thingsboard.io"
    assert {"userId", "sessionId", "iat", "tenantId", "enabled", "isPublic"} <= set(claims)
    refresh = jwt.decode(client.token_info["refreshToken"], options={"verify_signature": False})
    assert refresh["scopes"] == ["REFRESH_TOKEN"] and refresh["exp"] > claims["exp"]
    client.refresh()
    assert client.get_token() != old
    assert client.get_user().email == target.username  # the refreshed token works


def test_device_create_find_credentials_and_profile(client, unique):
    name = f"contract-dev-{unique}"
    dtype = f"thermo-{unique}"
    dev = client.save_device(Device(name=name, type=dtype, label="L1"), access_token=f"TOK{unique}")
    assert dev.name == name and dev.type == dtype
    assert client.get_tenant_device(name).id.id == dev.id.id
    creds = client.get_device_credentials_by_device_id(dev.id)
    assert creds.credentials_type == "ACCESS_TOKEN" and creds.credentials_id == f"TOK{unique}"
    profile = client.get_device_profile_by_id(dev.device_profile_id)
    assert profile.name == dtype  # the type created its own profile (§3.3)
    page = client.get_tenant_devices(page_size=10, page=0, type=dtype)
    assert [d.name for d in page.data] == [name] and page.total_elements == 1 and not page.has_next
    found = client.get_tenant_devices(page_size=100, page=0, text_search=f"DEV-{unique}")
    assert name in [d.name for d in found.data]  # textSearch is a case-insensitive substring


def test_random_token_and_duplicate_name(client, unique):
    name = f"contract-dup-{unique}"
    dev = client.save_device(Device(name=name, type="default"))
    token = client.get_device_credentials_by_device_id(dev.id).credentials_id
    assert len(token) == 20 and token.isalnum()
    with pytest.raises(ApiException) as err:
        client.save_device(Device(name=name, type="default"))
    assert err.value.status == 400
    body = api_error(err.value)
    assert body["message"] == "Device with such name already exists!" and body["errorCode"] == 31


def test_update_and_delete_device(client, unique):
    dev = client.save_device(Device(name=f"contract-upd-{unique}", type="default"))
    dev.label = "changed"
    saved = client.save_device(dev)
    assert saved.id.id == dev.id.id and saved.label == "changed"
    client.delete_device(dev.id)
    with pytest.raises(ApiException) as err:
        client.get_device_by_id(dev.id)
    assert err.value.status == 404
    assert api_error(err.value)["errorCode"] == 32


def test_unknown_device_id_is_404(client):
    missing = str(uuid.uuid4())
    with pytest.raises(ApiException) as err:
        client.get_device_by_id(DeviceId(missing, "DEVICE"))
    body = api_error(err.value)
    assert err.value.status == 404 and body["message"] == f"Device with id [{missing}] is not found"


def test_device_profile_read_modify_write(client, unique):
    default = client.get_default_device_profile_info()
    assert default.name == "default"
    profile = client.save_device_profile(DeviceProfile(name=f"prof-{unique}", type="DEFAULT",
                                                       transport_type="DEFAULT", provision_type="DISABLED",
                                                       profile_data={"configuration": {"type": "DEFAULT"},
                                                                     "transportConfiguration": {"type": "DEFAULT"}}))
    got = client.get_device_profile_by_id(profile.id)
    got.description = "edited"
    again = client.save_device_profile(got)
    assert again.id.id == profile.id.id and again.description == "edited"
    names = [p.name for p in client.get_device_profiles(page_size=1000, page=0).data]
    assert f"prof-{unique}" in names


def test_assets_create_find_and_page(client, unique):
    name = f"Zone {unique}"
    atype = f"WeatherStation-{unique}"
    asset = client.save_asset(Asset(name=name, type=atype))
    assert client.get_tenant_asset(name).id.id == asset.id.id
    assert client.get_asset_by_id(asset.id).type == atype
    page = client.get_tenant_assets(page_size=100, page=0, type=atype)
    assert [a.name for a in page.data] == [name]
    with pytest.raises(ApiException) as err:
        client.save_asset(Asset(name=name, type=atype))
    assert api_error(err.value)["message"] == "Asset with such name already exists!"


def test_wrong_password_is_401(target):
    r = requests.post(f"{target.url}/api/auth/login", json={"username": target.username, "password": "wrong"})
    body = r.json()
    assert r.status_code == 401
    assert body["message"] == "Invalid username or password" and body["errorCode"] == 10 and body["status"] == 401
    assert isinstance(body["timestamp"], int)


def test_garbage_and_expired_tokens(target):
    url = f"{target.url}/api/auth/user"
    r = requests.get(url, headers={"X-Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401 and r.json()["errorCode"] == 10
    # A well-formed token with a foreign signature and a past exp: TB answers "Token has expired" (11).
    forged = jwt.encode({"sub": target.username, "scopes": ["TENANT_ADMIN"], "iss": "thingsboard.io",
                         "exp": int(time.time()) - 60}, "someone-elses-signing-key-" * 4, algorithm="HS512")
    r = requests.get(url, headers={"X-Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and r.json() | {"timestamp": 0} == {
        "status": 401, "message": "Token has expired", "errorCode": 11, "timestamp": 0}
    r = requests.get(url)
    assert r.status_code == 401 and r.json()["message"] == "Authentication failed"


def test_plain_authorization_header_is_accepted(client, target):
    r = requests.get(f"{target.url}/api/auth/user", headers={"Authorization": f"Bearer {client.get_token()}"})
    assert r.status_code == 200 and r.json()["email"] == target.username


def test_sysadmin_cannot_list_tenant_devices(target):
    import os

    # ThingsBoard's demo data has the same system administrator as the embedded platform.
    user = os.environ.get("TB_SYSADMIN_USERNAME", "sysadmin@thingsboard.org")
    password = os.environ.get("TB_SYSADMIN_PASSWORD", "sysadmin")
    from tests.fixtures.platform import tenant_session

    s = tenant_session(target.url, user, password)
    r = s.get(f"{target.url}/api/tenant/devices", params={"pageSize": 1, "page": 0})
    assert r.status_code == 403
    assert r.json()["message"] == "You don't have permission to perform this operation!"
