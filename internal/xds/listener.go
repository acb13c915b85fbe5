package xds

import (
	"errors"
	"fmt"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
)

// adsSource is the config source of every RDS and EDS reference: the same
// ADS stream.
func adsSource() *corepb.ConfigSource {
	return &corepb.ConfigSource{
		ResourceApiVersion:    corepb.ApiVersion_V3,
		ConfigSourceSpecifier: &corepb.ConfigSource_Ads{Ads: &corepb.AggregatedConfigSource{}},
	}
}

// listener builds the API listener of a virtual service: an
// HttpConnectionManager that fetches routeConfig over ADS and ends with the
// router filter (grpc-go requires it, last).
func listener(name, routeConfig string) (*listenerpb.Listener, error) {
	router, err := anypb.New(&routerpb.Router{})
	if err != nil {
		return nil, fmt.Errorf("marshal router filter: %w", err)
	}
	hcm := &hcmpb.HttpConnectionManager{
		CodecType:  hcmpb.HttpConnectionManager_AUTO,
		StatPrefix: name,
		RouteSpecifier: &hcmpb.HttpConnectionManager_Rds{Rds: &hcmpb.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: routeConfig,
		}},
		HttpFilters: []*hcmpb.HttpFilter{{
			Name:       wellknown.Router,
			ConfigType: &hcmpb.HttpFilter_TypedConfig{TypedConfig: router},
		}},
	}
	a, err := anypb.New(hcm)
	if err != nil {
		return nil, fmt.Errorf("marshal http connection manager: %w", err)
	}
	return &listenerpb.Listener{
		Name:        name,
		ApiListener: &listenerpb.ApiListener{ApiListener: a},
	}, nil
}

// rdsName returns the route configuration an API listener names, or "" for a
// listener that is not an API listener with RDS.
func rdsName(l *listenerpb.Listener) (string, error) {
	a := l.GetApiListener().GetApiListener()
	if a == nil {
		return "", nil
	}
	hcm := &hcmpb.HttpConnectionManager{}
	if err := a.UnmarshalTo(hcm); err != nil {
		return "", fmt.Errorf("api listener: %w", err)
	}
	rds := hcm.GetRds()
	if rds == nil {
		return "", nil
	}
	if rds.GetRouteConfigName() == "" {
		return "", errors.New("api listener: rds names no route configuration")
	}
	return rds.GetRouteConfigName(), nil
}
