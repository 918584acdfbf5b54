// Command knative-validate runs Knative Serving's own defaulting and validation
// (the code its admission webhook runs, with the default config-defaults and
// config-features) on every serving.knative.dev/v1 Service in the YAML files
// named on the command line. It prints one JSON object per Service:
// {"file", "name", "errors", "warnings"}. The manifests tests read them.
//
// Built by .ci/run against the Knative Serving version pinned in .ci/versions.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

type result struct {
	File     string `json:"file"`
	Name     string `json:"name"`
	Errors   string `json:"errors"`
	Warnings string `json:"warnings"`
}

func validate(path string, out *json.Encoder) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	decoder := yaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var doc map[string]interface{}
		if err := decoder.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("%s: %w", path, err)
		}
		if doc == nil || doc["apiVersion"] != "serving.knative.dev/v1" || doc["kind"] != "Service" {
			continue
		}
		var svc servingv1.Service
		u := unstructured.Unstructured{Object: doc}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &svc); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		ctx := apis.WithinCreate(context.Background())
		svc.SetDefaults(ctx)
		r := result{File: path, Name: svc.Name}
		if fe := svc.Validate(ctx); fe != nil {
			if e := fe.Filter(apis.ErrorLevel); e != nil {
				r.Errors = e.Error()
			}
			if w := fe.Filter(apis.WarningLevel); w != nil {
				r.Warnings = w.Error()
			}
		}
		if err := out.Encode(r); err != nil {
			return err
		}
	}
}

func main() {
	out := json.NewEncoder(os.Stdout)
	for _, path := range os.Args[1:] {
		if err := validate(path, out); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
}
