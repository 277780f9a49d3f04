"""Auth endpoints: login, refresh, verify, logout and the caller's own account."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework_simplejwt.views import TokenViewBase

from accounts import services
from accounts.errors import CHALLENGE_INVALID, CLIENT_DETAILS, InvalidCredentials, TokenRejected
from accounts.rejections import reject
from accounts.serializers import (
    LoginSerializer,
    LogoutResultSerializer,
    LogoutSerializer,
    MeSerializer,
    RefreshSerializer,
    TokenPairSerializer,
    VerifiedTokenSerializer,
    VerifySerializer,
    me_representation,
)
from accounts.throttles import LoginAccountThrottle, LoginAddressThrottle
from core.openapi import error_responses


class PublicTokenApi(TokenViewBase):
    """simplejwt's token view base (no authentication, no permission) with TaskHub's 401 challenge."""

    def get_authenticate_header(self, request: Request) -> str:
        return CHALLENGE_INVALID


class LoginApi(PublicTokenApi):
    """Exchange a username and password for an access and a refresh token (throttled).

    Every attempt counts against the client address (a throttle class); failed attempts count
    against the account at that address (`LoginAccountThrottle`, once the body is valid).
    """

    serializer_class = LoginSerializer
    throttle_classes = [LoginAddressThrottle]

    @extend_schema(responses={200: TokenPairSerializer, **error_responses(400, 429, public=True)})
    def post(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account_limit = LoginAccountThrottle()
        account_limit.charge(request, serializer.validated_data["username"])
        pair = services.session_login(request=request, **serializer.validated_data)
        if pair is None:
            raise InvalidCredentials()
        account_limit.refund()
        return Response(TokenPairSerializer(pair).data)


class TokenCheckApi(PublicTokenApi):
    """Validate the body, run one token service on it; a refused token is a logged, counted 401."""

    result_serializer_class: type[serializers.Serializer]

    def check(self, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def post(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            result = self.check(serializer.validated_data)
        except TokenRejected as rejection:
            reject(request, rejection)
        return Response(self.result_serializer_class(result).data)


@extend_schema(responses={200: TokenPairSerializer, **error_responses(400, 401, public=True)})
class RefreshApi(TokenCheckApi):
    """Rotate a refresh token; within the reuse grace, a replay gets the same successor."""

    serializer_class = RefreshSerializer
    result_serializer_class = TokenPairSerializer

    def check(self, data: dict[str, Any]) -> services.TokenPair:
        return services.session_refresh(raw_refresh=data["refresh"])


@extend_schema(responses={200: VerifiedTokenSerializer, **error_responses(400, 401, public=True)})
class VerifyApi(TokenCheckApi):
    """Say whether an access or refresh token is currently valid, and whose it is."""

    serializer_class = VerifySerializer
    result_serializer_class = VerifiedTokenSerializer

    def check(self, data: dict[str, Any]) -> dict[str, Any]:
        return services.token_verify(raw=data["token"])


class LogoutApi(GenericAPIView):
    """End the session of the given refresh token, or with `"all": true` every session of the caller."""

    serializer_class = LogoutSerializer

    @extend_schema(responses={200: LogoutResultSerializer, **error_responses(400)})
    def post(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            if data["all"]:
                revoked = services.session_logout_all(user=request.user)
            else:
                revoked = services.session_logout(user=request.user, raw_refresh=data["refresh"])
        except TokenRejected as rejection:
            # The caller's own access token is fine: a bad refresh token in the body is a 400.
            detail = serializers.ErrorDetail(CLIENT_DETAILS[rejection.code], code=rejection.code)
            raise serializers.ValidationError({"refresh": [detail]}) from rejection
        return Response(LogoutResultSerializer({"revoked_sessions": revoked}).data)


class MeApi(GenericAPIView):
    """Return the caller's account."""

    serializer_class = MeSerializer

    @extend_schema(responses={200: MeSerializer, **error_responses()})
    def get(self, request: Request) -> Response:
        return Response(me_representation(request.user))
