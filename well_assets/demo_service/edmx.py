"""Static OData documents: the `$metadata` EDMX (CSDL XML) and the service document."""

from __future__ import annotations

ENTITY_SET = "WellProduction"
NAMESPACE = "WellAssets.Demo"

_METADATA_TEMPLATE = f"""<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">
  <edmx:DataServices>
    <Schema Namespace="{NAMESPACE}" xmlns="http://docs.oasis-open.org/odata/ns/edm">
      <EntityType Name="{ENTITY_SET}">
        <Key>
          <PropertyRef Name="WellCode"/>
          <PropertyRef Name="ProductionDate"/>
        </Key>
        <Property Name="WellCode" Type="Edm.String" Nullable="false" MaxLength="32"/>
        <Property Name="ProductionDate" Type="Edm.Date" Nullable="false"/>
        <Property Name="OilProduction" Type="Edm.Decimal" Precision="18" Scale="3"/>
        <Property Name="GasProduction" Type="Edm.Decimal" Precision="18" Scale="3"/>
        <Property Name="WaterProduction" Type="Edm.Decimal" Precision="18" Scale="3"/>
      </EntityType>
      <EntityContainer Name="Container">
        <EntitySet Name="{ENTITY_SET}" EntityType="{NAMESPACE}.{ENTITY_SET}">
          <Annotation Term="Org.OData.Capabilities.V1.ChangeTracking">
            <Record>
              <PropertyValue Property="Supported" Bool="{{supported}}"/>
            </Record>
          </Annotation>
        </EntitySet>
      </EntityContainer>
    </Schema>
  </edmx:DataServices>
</edmx:Edmx>
"""


def metadata_xml(track_changes: bool = True) -> str:
    """The EDMX; the entity set's ChangeTracking annotation says whether delta links exist."""
    return _METADATA_TEMPLATE.replace("{supported}", "true" if track_changes else "false")


METADATA_XML = metadata_xml()


def service_document() -> dict:
    return {
        "@odata.context": "$metadata",
        "value": [{"name": ENTITY_SET, "kind": "EntitySet", "url": ENTITY_SET}],
    }
